package consultest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Version is the Consul version scripts/install-consul.sh builds.
const Version = "1.14.11"

// Binary returns the path of a consul binary: $INMESH_CONSUL, `consul` on
// PATH, or the one scripts/install-consul.sh cached.
func Binary() (string, error) {
	if p := os.Getenv("INMESH_CONSUL"); p != "" {
		if isExec(p) {
			return p, nil
		}
		return "", fmt.Errorf("consultest: $INMESH_CONSUL=%s is not an executable", p)
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	if p := cachedBinary(); isExec(p) {
		return p, nil
	}
	return "", errors.New("consultest: no consul binary: run scripts/install-consul.sh (it builds Consul " + Version +
		" from the Go module proxy and caches it), or put consul on PATH, or set INMESH_CONSUL")
}

func cachedBinary() string {
	dir := os.Getenv("INMESH_CACHE")
	if dir == "" {
		if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
			dir = filepath.Join(x, "inmesh")
		} else if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".cache", "inmesh")
		}
	}
	return filepath.Join(dir, "consul-"+Version, "consul")
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Agent is one running dev agent.
type Agent struct {
	// HTTPAddr is the agent's HTTP API, host:port on 127.0.0.1.
	HTTPAddr string
	// Client talks to the agent.
	Client *api.Client

	bin   string
	ports [4]int // http, serf lan, serf wan, server
	log   *logBuffer

	// hcl is extra agent configuration (-hcl); httpsOnly serves the API on
	// HTTPS at ports[0] and not HTTP; ready, when set, replaces the
	// readiness check.
	hcl       []string
	httpsOnly bool
	caPEM     []byte
	newClient func(a *Agent) (*api.Client, error)
	ready     func(ctx context.Context) error

	mu      sync.Mutex
	cmd     *exec.Cmd
	waitErr chan error
	paused  bool
}

// Start starts a dev agent for t, stopped when t ends. It skips t when no
// binary is installed, unless the CI variable is set: then it fails t.
func Start(t testing.TB) *Agent {
	t.Helper()
	return startAgent(t, func(*Agent) {})
}

// startAgent starts a dev agent that setup configures once its ports are
// chosen.
func startAgent(t testing.TB, setup func(*Agent)) *Agent {
	t.Helper()
	bin := binaryOrSkip(t)
	var lastErr error
	for range 3 { // a free port can be taken between choosing and binding
		a := &Agent{bin: bin}
		setup(a)
		if lastErr = a.pickPorts(); lastErr != nil {
			continue
		}
		if lastErr = a.start(); lastErr == nil {
			t.Cleanup(a.Stop)
			return a
		}
		a.Stop()
	}
	t.Fatalf("consultest: starting an agent: %v", lastErr)
	return nil
}

func (a *Agent) pickPorts() error {
	for i := range a.ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		a.ports[i] = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
	}
	a.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ports[0]))
	if a.newClient != nil {
		c, err := a.newClient(a)
		a.Client = c
		return err
	}
	cfg := api.DefaultConfig()
	cfg.Address = a.HTTPAddr
	c, err := api.NewClient(cfg)
	a.Client = c
	return err
}

// start runs the agent and waits until it has a leader and a Connect CA.
func (a *Agent) start() error {
	a.mu.Lock()
	a.log = &logBuffer{}
	args := []string{"agent", "-dev",
		"-bind=127.0.0.1", "-client=127.0.0.1",
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-serf-lan-port=" + strconv.Itoa(a.ports[1]),
		"-serf-wan-port=" + strconv.Itoa(a.ports[2]),
		"-server-port=" + strconv.Itoa(a.ports[3]),
		"-log-level=warn"}
	if a.httpsOnly {
		args = append(args, "-hcl", fmt.Sprintf("ports { http = -1, https = %d }", a.ports[0]))
	} else {
		args = append(args, "-http-port="+strconv.Itoa(a.ports[0]))
	}
	for _, h := range a.hcl {
		args = append(args, "-hcl", h)
	}
	cmd := exec.Command(a.bin, args...)
	cmd.Stdout = a.log
	cmd.Stderr = a.log
	if err := cmd.Start(); err != nil {
		a.mu.Unlock()
		return err
	}
	a.cmd = cmd
	a.paused = false
	a.waitErr = make(chan error, 1)
	go func() { a.waitErr <- cmd.Wait() }()
	a.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.waitReady(ctx); err != nil {
		return fmt.Errorf("%w; agent output:\n%s", err, a.log.String())
	}
	return nil
}

func (a *Agent) waitReady(ctx context.Context) error {
	for {
		select {
		case err := <-a.waitErr:
			a.waitErr <- err
			return fmt.Errorf("consultest: agent exited: %v", err)
		default:
		}
		leader, err := a.Client.Status().Leader()
		if err == nil && leader != "" {
			_, _, err := a.Client.Agent().ConnectCARoots(nil)
			if err == nil && a.ready != nil {
				err = a.ready(ctx)
			}
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consultest: agent on %s not ready: %w", a.HTTPAddr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop kills the agent and waits for it. It is safe to call twice.
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd, waitErr := a.cmd, a.waitErr
	a.cmd = nil
	a.mu.Unlock()
	stopProcess(cmd, waitErr, syscall.SIGTERM)
}

// stopProcess sends cmd sig (after SIGCONT, so that a paused process gets
// it) and waits for it, killing it after 10 s; a nil cmd is stopped
// already.
func stopProcess(cmd *exec.Cmd, waitErr chan error, sig syscall.Signal) {
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(sig)
	select {
	case <-waitErr:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-waitErr
	}
}

// Restart stops the agent and starts a new one on the same ports. A dev
// agent keeps its data in memory: the new one starts empty.
func (a *Agent) Restart(t testing.TB) {
	t.Helper()
	a.Stop()
	// Its ports were free when Start chose them, but between Stop and now
	// another process may hold one for a moment (an outgoing connection's
	// ephemeral port): try again for a few seconds before failing.
	var err error
	for range 10 {
		if err = a.start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		a.Stop()
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("consultest: restarting: %v", err)
	}
}

// Pause freezes the agent (SIGSTOP): connections hang as with a partitioned
// agent, and its data survives Resume. It returns once the kernel reports
// the process stopped, so nothing the test does next can reach a running
// agent.
func (a *Agent) Pause() {
	a.signal(syscall.SIGSTOP, true)
	a.mu.Lock()
	cmd := a.cmd
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	stat := fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if stopped(stat) {
			return
		}
	}
}

// stopped reports whether the process whose /proc stat file is path is in
// the stopped state ("T"); false where /proc cannot say.
func stopped(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself hold spaces or parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'T'
}

// Resume thaws a paused agent.
func (a *Agent) Resume() { a.signal(syscall.SIGCONT, false) }

func (a *Agent) signal(sig syscall.Signal, paused bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		_ = a.cmd.Process.Signal(sig)
		a.paused = paused
	}
}

// Log returns what the agent printed.
func (a *Agent) Log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.log.String()
}
