// Package control is the protocol between the airlock CLI and a running
// pod's supervisor: one JSON request and one JSON response per connection
// (or, for "exec", a conversation: see exec.go) over a unix socket (pods/<name>/run/control.sock, mode 0600). The
// supervisor accepts only peers whose kernel-reported uid is its own or
// root (SO_PEERCRED), so another local user cannot steer a pod even if the
// socket's permissions were loosened.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Request is one command to the supervisor.
type Request struct {
	Op string `json:"op"` // "ping", "net.reload", "stop", "exec"
	// GraceMS is how long "stop" gives the pod's processes after SIGTERM.
	GraceMS int64 `json:"grace_ms,omitempty"`
	// Exec is the command of an "exec" request.
	Exec *ExecRequest `json:"exec,omitempty"`
}

// Response answers a Request.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Data  any    `json:"data,omitempty"`
}

// Handler serves one request.
type Handler func(Request) Response

// Server is a listening control socket.
type Server struct {
	ln   *net.UnixListener
	path string
	// Exec, when set before the first connection, serves "exec"
	// requests; without it they are refused.
	Exec func(*ExecSession)
}

// Listen creates the socket at path (replacing a stale one) and serves h
// until Close.
func Listen(path string, h Handler) (*Server, error) {
	return ListenExec(path, h, nil)
}

// ListenExec is Listen with a server for "exec" requests.
func ListenExec(path string, h Handler, x func(*ExecSession)) (*Server, error) {
	_ = os.Remove(path)
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("opening the control socket %s: %w", path, err)
	}
	s := &Server{ln: ln, path: path, Exec: x}
	go s.serve(h)
	return s, nil
}

func (s *Server) serve(h Handler) {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		go s.handle(c, h)
	}
}

func (s *Server) handle(c *net.UnixConn, h Handler) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := checkPeer(c); err != nil {
		_ = json.NewEncoder(c).Encode(Response{Error: err.Error()})
		return
	}
	// The first read takes the files an exec request carries (its
	// stdio); any other request carries none, and files it does carry
	// are closed.
	req, dec, files, err := readRequest(c)
	if err != nil {
		closeFiles(files)
		_ = json.NewEncoder(c).Encode(Response{Error: "malformed request"})
		return
	}
	if req.Op == "exec" {
		if s.Exec != nil && req.Exec == nil {
			closeFiles(files)
			_ = json.NewEncoder(c).Encode(ExecEvent{Error: "malformed exec request: no command", Code: 125})
			return
		}
		if s.Exec == nil {
			closeFiles(files)
			_ = json.NewEncoder(c).Encode(ExecEvent{Error: "this pod's supervisor runs one command and serves no other; stop it first, or start the pod with airlock start", Code: 125})
			return
		}
		_ = c.SetDeadline(time.Time{})
		sess := newSession(c, dec, *req.Exec, files)
		defer sess.close()
		s.Exec(sess)
		return
	}
	closeFiles(files)
	_ = json.NewEncoder(c).Encode(h(req))
}

// checkPeer admits root and the supervisor's own uid.
func checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return errors.New("permission denied: peer uid not allowed")
	}
	return nil
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	err := s.ln.Close()
	_ = os.Remove(s.path)
	return err
}

// Call sends req to the supervisor behind path.
func Call(path string, req Request) (*Response, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, errdefs.NotFound("the pod's supervisor is not answering on %s: %v", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("reading the supervisor's answer: %w", err)
	}
	if !resp.OK {
		return &resp, fmt.Errorf("supervisor: %s", resp.Error)
	}
	return &resp, nil
}
