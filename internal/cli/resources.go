package cli

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/cgroup"
	"github.com/airlock-dev/airlock/internal/config"
	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/pod"
)

// runningGroup opens the cgroup of a running pod.
func runningGroup(name string) (*pod.Pod, cgroup.Group, error) {
	s, err := openStore()
	if err != nil {
		return nil, nil, err
	}
	p, err := resolvePod(s, name)
	if err != nil {
		return nil, nil, err
	}
	if _, running := p.Running(); !running {
		return p, nil, errdefs.NotFound("pod %s is not running", p.Name)
	}
	g, err := cgroup.Load(cgroup.GroupName(p.Name, p.Dir))
	if err != nil {
		return p, nil, fmt.Errorf("pod %s has no cgroup (was the cgroups wall downgraded?): %w", p.Name, err)
	}
	return p, g, nil
}

func limitsOf(r config.Resources) cgroup.Limits {
	return cgroup.Limits{Memory: int64(r.Memory), Swap: int64(r.Swap), CPUs: r.CPUs, Pids: int64(r.Pids), ReadBPS: int64(r.IO.ReadBPS), WriteBPS: int64(r.IO.WriteBPS)}
}

func newLimitCmd() *cobra.Command {
	var f runFlags
	var ioRead, ioWrite string
	cmd := &cobra.Command{
		Use:   "limit POD [--memory SIZE] [--swap SIZE] [--cpus N] [--pids N] [--io-read-bps RATE] [--io-write-bps RATE]",
		Short: "Change a pod's resource limits, live when it runs, and keep them in its config",
		Args:  argsError(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.memory == "" && f.swap == "" && f.cpus == 0 && f.pids == 0 && ioRead == "" && ioWrite == "" {
				return usageError{fmt.Errorf("limit: give at least one of --memory, --swap, --cpus, --pids, --io-read-bps, --io-write-bps")}
			}
			s, err := openStore()
			if err != nil {
				return err
			}
			p, err := resolvePod(s, args[0])
			if err != nil {
				return err
			}
			unlock, err := p.Lock()
			if err != nil {
				return err
			}
			defer unlock()
			if err := applyRunFlags(p.Config, &f); err != nil {
				return err
			}
			if err := applyIOFlags(&p.Config.Resources.IO, ioRead, ioWrite); err != nil {
				return usageError{err}
			}
			if err := p.SaveConfig(); err != nil {
				return err
			}
			live := "kept for the next run"
			if _, running := p.Running(); running {
				g, err := cgroup.Load(cgroup.GroupName(p.Name, p.Dir))
				if err != nil {
					return err
				}
				if err := g.Set(limitsOf(p.Config.Resources)); err != nil {
					return fmt.Errorf("applying limits to the running pod: %w", err)
				}
				live = "applied to the running pod"
			}
			r := p.Config.Resources
			record(p, "limit", map[string]any{"memory": int64(r.Memory), "swap": int64(r.Swap), "cpus": r.CPUs, "pids": r.Pids,
				"io_read_bps": int64(r.IO.ReadBPS), "io_write_bps": int64(r.IO.WriteBPS), "live": live}, "ok")
			fmt.Fprintf(cmd.OutOrStdout(), "limits of %s %s: memory %s, cpus %s, pids %s\n", p.Name, live, orUnlimited(r.Memory.String(), r.Memory == 0), orUnlimited(fmt.Sprint(r.CPUs), r.CPUs == 0), orUnlimited(fmt.Sprint(r.Pids), r.Pids == 0))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.memory, "memory", "", "memory limit, e.g. 2GiB")
	fl.StringVar(&f.swap, "swap", "", "swap limit")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit, e.g. 1.5")
	fl.Int64Var(&f.pids, "pids", 0, "process limit")
	fl.StringVar(&ioRead, "io-read-bps", "", "read rate limit on the disk of the pod's layer, e.g. 50MiB (0 lifts it)")
	fl.StringVar(&ioWrite, "io-write-bps", "", "write rate limit on the disk of the pod's layer, e.g. 20MiB (0 lifts it)")
	return cmd
}

// applyIOFlags sets the I/O rates given; "" leaves a rate as it is.
func applyIOFlags(io *config.IO, read, write string) error {
	for _, x := range []struct {
		flag, val string
		dst       *config.ByteSize
	}{{"--io-read-bps", read, &io.ReadBPS}, {"--io-write-bps", write, &io.WriteBPS}} {
		if x.val == "" {
			continue
		}
		b, err := config.ParseByteSize(x.val)
		if err != nil {
			return fmt.Errorf("%s: %w", x.flag, err)
		}
		if b < 0 {
			return fmt.Errorf("%s must not be negative", x.flag)
		}
		*x.dst = b
	}
	return nil
}

func orUnlimited(s string, unlimited bool) string {
	if unlimited {
		return "unlimited"
	}
	return s
}

func newFreezeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "freeze POD",
		Short: "Freeze every process of a running pod",
		Args:  argsError(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, g, err := runningGroup(args[0])
			if err != nil {
				return err
			}
			if err := g.Freeze(); err != nil {
				return err
			}
			record(p, "freeze", nil, "ok")
			fmt.Fprintf(cmd.OutOrStdout(), "froze %s\n", p.Name)
			return nil
		},
	}
}

func newResumeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "resume POD",
		Short: "Resume a frozen pod",
		Args:  argsError(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, g, err := runningGroup(args[0])
			if err != nil {
				return err
			}
			if err := g.Thaw(); err != nil {
				return err
			}
			record(p, "resume", nil, "ok")
			fmt.Fprintf(cmd.OutOrStdout(), "resumed %s\n", p.Name)
			return nil
		},
	}
}

func newKillCmd() *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:   "kill POD [--signal SIG]",
		Short: "Send a signal (default KILL) to every process of a running pod",
		Args:  argsError(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseSignal(sig)
			if err != nil {
				return err
			}
			p, g, err := runningGroup(args[0])
			if err != nil {
				return err
			}
			if n == unix.SIGKILL {
				err = g.Kill()
			} else {
				err = signalAll(g, n)
			}
			if err != nil {
				return err
			}
			record(p, "kill", map[string]any{"signal": unix.SignalName(n)}, "ok")
			fmt.Fprintf(cmd.OutOrStdout(), "sent %s to %s\n", unix.SignalName(n), p.Name)
			return nil
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal name or number, e.g. TERM, INT, 9")
	return cmd
}

func signalAll(g cgroup.Group, sig syscall.Signal) error {
	procs, err := g.Procs()
	if err != nil {
		return err
	}
	for _, pid := range procs {
		_ = unix.Kill(pid, sig)
	}
	return nil
}

func parseSignal(s string) (syscall.Signal, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && fmt.Sprint(n) == s {
		if n <= 0 || n > 64 {
			return 0, errdefs.Invalid("--signal %s: not a signal number", s)
		}
		return syscall.Signal(n), nil
	}
	if !strings.HasPrefix(s, "SIG") {
		s = "SIG" + s
	}
	if sig := unix.SignalNum(s); sig != 0 {
		return sig, nil
	}
	return 0, errdefs.Invalid("--signal %s: unknown signal; use a name such as TERM or a number", s)
}

func newStatsCmd() *cobra.Command {
	var asJSON, watch bool
	cmd := &cobra.Command{
		Use:   "stats POD [--json] [--watch]",
		Short: "Show a running pod's CPU, memory, PIDs and I/O",
		Args:  argsError(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, g, err := runningGroup(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if !watch {
				st, err := g.Stats()
				if err != nil {
					return err
				}
				return printStats(w, p.Name, st, asJSON, 0)
			}
			return watchStats(w, p, g, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (one object per sample with --watch)")
	cmd.Flags().BoolVar(&watch, "watch", false, "refresh every second until the pod stops or Ctrl-C")
	return cmd
}

func watchStats(w io.Writer, p *pod.Pod, g cgroup.Group, asJSON bool) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(stop)
	var prev uint64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		st, err := g.Stats()
		if err != nil {
			return nil // the pod stopped
		}
		cpu := 0.0
		if prev != 0 {
			cpu = float64(st.CPUUsec-prev) / 1e6 * 100
		}
		prev = st.CPUUsec
		if !asJSON {
			fmt.Fprint(w, "\x1b[H\x1b[2J")
		}
		if err := printStats(w, p.Name, st, asJSON, cpu); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		if _, running := p.Running(); !running {
			return nil
		}
	}
}

func printStats(w io.Writer, name string, st cgroup.Stats, asJSON bool, cpuPct float64) error {
	if asJSON {
		return writeJSON(w, struct {
			Pod string `json:"pod"`
			cgroup.Stats
			CPUPercent float64 `json:"cpu_percent,omitempty"`
		}{name, st, cpuPct})
	}
	lim := func(v int64) string {
		if v <= 0 || v >= 1<<62 {
			return "unlimited"
		}
		return config.ByteSize(v).String()
	}
	fmt.Fprintf(w, "pod %s\n", name)
	fmt.Fprintf(w, "  cpu     %.2fs used", float64(st.CPUUsec)/1e6)
	if cpuPct > 0 {
		fmt.Fprintf(w, " (%.0f%% now)", cpuPct)
	}
	fmt.Fprintf(w, ", limit %s\n", orUnlimited(fmt.Sprintf("%g CPUs", st.CPULimit), st.CPULimit <= 0))
	fmt.Fprintf(w, "  memory  %s of %s (peak %s)\n", config.ByteSize(st.MemoryBytes), lim(st.MemoryLimit), config.ByteSize(st.MemoryPeak))
	fmt.Fprintf(w, "  pids    %d of %s\n", st.Pids, orUnlimited(fmt.Sprint(st.PidsLimit), st.PidsLimit <= 0))
	fmt.Fprintf(w, "  io      read %s, written %s\n", config.ByteSize(int64(st.IOReadBytes)), config.ByteSize(int64(st.IOWriteBytes)))
	fmt.Fprintf(w, "  events  %d OOM kills, %d PID-limit hits, frozen: %v\n", st.OOMKills, st.PidsMaxHits, st.Frozen)
	return nil
}
