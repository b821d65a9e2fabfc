package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/fdpass"
)

// An "exec" request runs a command in a started pod (airlock start). The
// conversation on its connection, one JSON value per line:
//
//   - the client sends the Request, with its fds 0-2 attached
//     (SCM_RIGHTS) unless it asks for a TTY;
//   - the supervisor answers one ExecEvent: Started (with the master of
//     the command's pty attached, for a TTY), or Error and Code (125, 126,
//     127) when the command could not start;
//   - meanwhile the client may send ExecSignal values (a signal it got,
//     to pass on); closing its end hangs the command up;
//   - the supervisor ends with one ExecEvent with Exit, the command's
//     exit status.

// ExecRequest is the command of an "exec" request.
type ExecRequest struct {
	Args []string `json:"args,omitempty"` // empty: the pod's run.command, else the user's shell
	Env  []string `json:"env,omitempty"`  // -e KEY=VAL
	// Environ is the client's environment; the supervisor passes on only
	// what it passes for airlock run (a fixed list of names).
	Environ []string `json:"environ,omitempty"`
	Cwd     string   `json:"cwd,omitempty"`     // the client's directory, kept when inside the workspace
	Workdir string   `json:"workdir,omitempty"` // -w
	TTY     bool     `json:"tty,omitempty"`
	Rows    uint16   `json:"rows,omitempty"`
	Cols    uint16   `json:"cols,omitempty"`
}

// ExecEvent is one message from the supervisor about an exec.
type ExecEvent struct {
	Started bool   `json:"started,omitempty"`
	Pid     int    `json:"pid,omitempty"` // in the pod's PID namespace
	Exit    *int   `json:"exit,omitempty"`
	Error   string `json:"error,omitempty"`
	Code    int    `json:"code,omitempty"` // with Error: the exit status to report
}

// ExecSignal passes a signal the client received on to the command.
type ExecSignal struct {
	Signal int `json:"signal"`
}

// maxFiles bounds the files one request may carry (fds 0-2).
const maxFiles = 3

// maxRequest bounds one request (a command line and environment can be a
// few MiB: ARG_MAX is a quarter of the stack limit).
const maxRequest = 32 << 20

// startTimeout bounds the wait for a command's start.
const startTimeout = 30 * time.Second

// readRequest reads the first request of a connection and the files sent
// with it. The decoder it returns holds whatever followed.
func readRequest(c *net.UnixConn) (Request, *json.Decoder, []*os.File, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, fdpass.Space(maxFiles))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob) // MSG_CMSG_CLOEXEC: the files never leak into a child
	files, perr := fdpass.Files(oob[:oobn], "passed")
	if perr != nil && err == nil {
		err = perr
	}
	var req Request
	if err != nil && n == 0 {
		return req, nil, files, err
	}
	dec := json.NewDecoder(io.LimitReader(io.MultiReader(bytes.NewReader(buf[:n]), c), maxRequest))
	if err := dec.Decode(&req); err != nil {
		return req, nil, files, err
	}
	return req, dec, files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// ExecSession is the supervisor's side of one exec.
type ExecSession struct {
	Req ExecRequest
	// Stdio are the client's fds 0-2 (none with a TTY); the session
	// closes them when it ends.
	Stdio   []*os.File
	c       *net.UnixConn
	mu      sync.Mutex
	signals chan int
}

func newSession(c *net.UnixConn, dec *json.Decoder, req ExecRequest, files []*os.File) *ExecSession {
	s := &ExecSession{Req: req, Stdio: files, c: c, signals: make(chan int, 8)}
	go func() {
		defer close(s.signals)
		for {
			var m ExecSignal
			if err := dec.Decode(&m); err != nil {
				return // the client is gone (or wrote garbage): a hangup
			}
			if m.Signal > 0 && m.Signal < 65 {
				s.signals <- m.Signal
			}
		}
	}()
	return s
}

// Signals delivers the signals the client passes on; it is closed when
// the client hangs up.
func (s *ExecSession) Signals() <-chan int { return s.signals }

func (s *ExecSession) send(ev ExecEvent, files ...*os.File) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	oob := fdpass.FileRights(files)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _, err = s.c.WriteMsgUnix(append(b, '\n'), oob, nil)
	return err
}

// Started tells the client the command runs; terminal (nil unless TTY)
// goes with it.
func (s *ExecSession) Started(pid int, terminal *os.File) error {
	if terminal != nil {
		return s.send(ExecEvent{Started: true, Pid: pid}, terminal)
	}
	return s.send(ExecEvent{Started: true, Pid: pid})
}

// Fail tells the client the command did not start.
func (s *ExecSession) Fail(code int, msg string) {
	_ = s.send(ExecEvent{Error: msg, Code: code})
}

// Exit tells the client the command ended with code.
func (s *ExecSession) Exit(code int) {
	_ = s.send(ExecEvent{Exit: &code})
}

func (s *ExecSession) close() {
	closeFiles(s.Stdio)
}

// ExecError is a command that did not start; Code is the exit status to
// report (125, 126, 127).
type ExecError struct {
	Code int
	Msg  string
}

func (e *ExecError) Error() string { return e.Msg }

// ExecClient is the CLI's side of one exec.
type ExecClient struct {
	Pid int
	// Terminal is the master of the command's pty (TTY only), non-blocking
	// so that reads take deadlines; the caller closes it.
	Terminal *os.File
	c        *net.UnixConn
	r        *bufio.Reader
	mu       sync.Mutex
}

// Exec asks the supervisor behind path to run req, with stdio as the
// command's fds 0-2 (ignored with a TTY), and returns once it runs. An
// *ExecError says why it did not start.
func Exec(path string, req ExecRequest, stdio []*os.File) (*ExecClient, error) {
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, errdefs.NotFound("the pod's supervisor is not answering on %s: %v", path, err)
	}
	c := conn.(*net.UnixConn)
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	b, err := json.Marshal(Request{Op: "exec", Exec: &req})
	if err != nil {
		return nil, err
	}
	var oob []byte
	if !req.TTY {
		oob = fdpass.FileRights(stdio)
	}
	// One sendmsg carries the files and as much of the request as the
	// socket takes; the rest follows (a long command line is larger than
	// the socket's buffer).
	b = append(b, '\n')
	n, _, err := c.WriteMsgUnix(b, oob, nil)
	if err == nil && n < len(b) {
		_, err = c.Write(b[n:])
	}
	if err != nil {
		return nil, fmt.Errorf("sending the command to the supervisor: %w", err)
	}
	// The first answer comes alone (nothing else is sent before it), so
	// one read has it whole, with the terminal attached.
	buf := make([]byte, 64<<10)
	roob := make([]byte, fdpass.Space(1))
	// The start takes milliseconds; a pod that cannot take the command
	// (a frozen one) must not hold the caller forever.
	_ = c.SetReadDeadline(time.Now().Add(startTimeout))
	var oobn int
	n, oobn, _, _, err = c.ReadMsgUnix(buf, roob)
	_ = c.SetReadDeadline(time.Time{})
	var term *os.File
	fds, _ := fdpass.FDs(roob[:oobn])
	for _, fd := range fds {
		if term == nil {
			_ = unix.SetNonblock(fd, true)
			term = os.NewFile(uintptr(fd), "terminal")
		} else {
			unix.Close(fd)
		}
	}
	if n == 0 {
		if term != nil {
			term.Close()
		}
		if err == nil {
			err = io.EOF
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("the pod did not start the command within %s (is it frozen? airlock resume)", startTimeout)
		}
		return nil, fmt.Errorf("reading the supervisor's answer: %w", err)
	}
	line, rest, _ := bytes.Cut(buf[:n], []byte{'\n'})
	var ev ExecEvent
	if err := json.Unmarshal(line, &ev); err != nil {
		if term != nil {
			term.Close()
		}
		return nil, fmt.Errorf("reading the supervisor's answer: %w", err)
	}
	if !ev.Started {
		if term != nil {
			term.Close()
		}
		code := ev.Code
		if code == 0 {
			code = 125
		}
		return nil, &ExecError{Code: code, Msg: ev.Error}
	}
	ok = true
	return &ExecClient{Pid: ev.Pid, Terminal: term, c: c, r: bufio.NewReader(io.MultiReader(bytes.NewReader(rest), c))}, nil
}

// Signal passes sig on to the command.
func (x *ExecClient) Signal(sig int) error {
	b, _ := json.Marshal(ExecSignal{Signal: sig})
	x.mu.Lock()
	defer x.mu.Unlock()
	_, err := x.c.Write(append(b, '\n'))
	return err
}

// Wait returns the command's exit status and closes the connection.
func (x *ExecClient) Wait() (int, error) {
	defer x.c.Close()
	dec := json.NewDecoder(x.r)
	for {
		var ev ExecEvent
		if err := dec.Decode(&ev); err != nil {
			return 125, errors.New("the pod's supervisor went away before the command ended")
		}
		if ev.Exit != nil {
			return *ev.Exit, nil
		}
	}
}

// Close hangs the command up (the supervisor sends it SIGHUP).
func (x *ExecClient) Close() error { return x.c.Close() }
