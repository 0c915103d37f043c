package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// agent is the Consul agent measured: one this command started (cmd set,
// its CPU read from /proc), or the user's.
type agent struct {
	addr    string
	version string
	client  *api.Client
	cmd     *exec.Cmd
	dir     string
	caFile  string // the CA of its HTTPS API, with -https
	log     bytes.Buffer
}

// openAgent connects to the agent at addr, or starts a dev agent when
// addr is "".
func openAgent(addr, bin string) (*agent, error) {
	a := &agent{addr: addr}
	if addr == "" {
		if err := a.start(bin); err != nil {
			return nil, err
		}
	}
	var err error
	if a.client, err = newClient(a.addr, nil); err != nil {
		a.stop()
		return nil, err
	}
	self, err := a.client.Agent().Self()
	if err != nil {
		a.stop()
		return nil, fmt.Errorf("agent %s: %w", a.addr, err)
	}
	if cfg, ok := self["Config"]; ok {
		a.version, _ = cfg["Version"].(string)
	}
	return a, nil
}

// start runs a dev agent on free ports, with the per-client connection
// limit raised and leaf signing unthrottled, and waits for its Connect CA.
func (a *agent) start(bin string) error {
	if bin == "" {
		var err error
		if bin, err = consulBinary(); err != nil {
			return err
		}
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	if a.dir, err = os.MkdirTemp("", "consulscale-"); err != nil {
		return err
	}
	hcl := `limits { http_max_conns_per_client = 15000 }
connect { ca_config { csr_max_per_second = 0 } }
`
	httpPort := strconv.Itoa(ports[0])
	if useHTTPS {
		more, cfg, err := httpsConfig(a.dir, ports[0])
		if err != nil {
			return err
		}
		hcl += more
		agentTLS = cfg
		a.caFile = filepath.Join(a.dir, "ca.pem")
		httpPort = "-1"
	}
	cfgFile := filepath.Join(a.dir, "scale.hcl")
	if err := os.WriteFile(cfgFile, []byte(hcl), 0o600); err != nil {
		return err
	}
	a.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	a.cmd = exec.Command(bin, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-http-port="+httpPort, "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-serf-lan-port="+strconv.Itoa(ports[1]), "-serf-wan-port="+strconv.Itoa(ports[2]),
		"-server-port="+strconv.Itoa(ports[3]), "-log-level=warn", "-config-file="+cfgFile)
	a.cmd.Stdout, a.cmd.Stderr = &a.log, &a.log
	if err := a.cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	c, err := newClient(a.addr, nil)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if a.cmd.ProcessState != nil {
			return fmt.Errorf("the dev agent exited:\n%s", a.log.String())
		}
		if leader, err := c.Status().Leader(); err == nil && leader != "" {
			if _, _, err := c.Agent().ConnectCARoots(nil); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			a.stop()
			return fmt.Errorf("the dev agent did not become ready in 60s:\n%s", a.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (a *agent) stop() {
	if a.cmd != nil && a.cmd.Process != nil {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = a.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = a.cmd.Process.Kill()
			<-done
		}
		a.cmd = nil
	}
	if a.dir != "" {
		_ = os.RemoveAll(a.dir)
	}
}

// cpu is the CPU time the agent used so far; ok is false for an agent of
// the user's, whose process this command does not know.
func (a *agent) cpu() (time.Duration, bool) {
	if a.cmd == nil || a.cmd.Process == nil {
		return 0, false
	}
	return processCPU(a.cmd.Process.Pid)
}

// processCPU reads utime + stime of pid from /proc.
func processCPU(pid int) (time.Duration, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces: split after it.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, true
}

// selfCPU is the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func consulBinary() (string, error) {
	if p := os.Getenv("INMESH_CONSUL"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	home, _ := os.UserHomeDir()
	matches, _ := filepath.Glob(filepath.Join(home, ".cache", "inmesh", "consul-*", "consul"))
	if len(matches) > 0 {
		return matches[len(matches)-1], nil
	}
	return "", errors.New("no consul binary: set -consul or $INMESH_CONSUL, or run scripts/install-consul.sh")
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}
