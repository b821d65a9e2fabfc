package supervisor

import (
	"time"

	"github.com/airlock-dev/airlock/internal/config"
	"github.com/airlock-dev/airlock/internal/control"
)

// serveControl opens the pod's control socket for the CLI's live commands.
func (r *runner) serveControl() (func(), error) {
	srv, err := control.ListenExec(r.o.Pod.ControlSocket(), r.handle, r.exec)
	if err != nil {
		return nil, err
	}
	return func() { _ = srv.Close() }, nil
}

func (r *runner) handle(req control.Request) control.Response {
	switch req.Op {
	case "ping":
		return control.Response{OK: true, Data: r.walls}
	case "net.reload":
		return r.reloadNet()
	case "stop":
		return r.stop(time.Duration(req.GraceMS) * time.Millisecond)
	}
	return control.Response{Error: "unknown operation " + req.Op}
}

// reloadNet reads the pod's saved config again and hands the new network
// policy to the running wall.
func (r *runner) reloadNet() control.Response {
	cfg, err := config.Load(r.o.Pod.ConfigPath())
	if err != nil {
		return control.Response{Error: err.Error()}
	}
	w := r.wall.Load()
	if w == nil {
		return control.Response{Error: "this pod runs without a network wall (network.mode host)"}
	}
	w.SetPolicy(PolicyFromConfig(cfg.Network))
	r.o.Audit("net.reload", map[string]any{"allow": cfg.Network.Allow, "deny": cfg.Network.Deny}, "ok")
	return control.Response{OK: true}
}
