package control

import (
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	s, err := Listen(path, func(r Request) Response {
		if r.Op == "ping" {
			return Response{OK: true, Data: "pong"}
		}
		return Response{Error: "unknown op " + r.Op}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := Call(path, Request{Op: "ping"})
	if err != nil || resp.Data != "pong" {
		t.Fatalf("ping: %v %+v", err, resp)
	}
	if _, err := Call(path, Request{Op: "nope"}); err == nil {
		t.Fatal("unknown op succeeded")
	}
}

func TestNoSupervisor(t *testing.T) {
	if _, err := Call(filepath.Join(t.TempDir(), "missing.sock"), Request{Op: "ping"}); err == nil {
		t.Fatal("call to a missing socket succeeded")
	}
}
