package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// HAProxy as sidecars, the pattern an in-process mesh replaces: one hop
// (client, proxy, server) and two (the client's sidecar, then the
// server's). Debian's haproxy package; bench/install-haproxy.sh installs it.

// haproxyConfig forwards HTTP from listen to server with keep-alive on
// both sides, the defaults otherwise. No logging.
const haproxyConfig = `global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend in
    bind %s
    default_backend out
backend out
    server s1 %s
`

// startHAProxies starts two haproxy processes in the foreground: the first
// forwards to backend, the second to the first. It returns their addresses
// and a func of their CPU time so far; they are killed at the end. The
// error says why the HAProxy rows are skipped.
func (e *env) startHAProxies(backend string) (hop1, hop2 string, cpu func() time.Duration, err error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		bin = "/usr/sbin/haproxy" // root's PATH has sbin, others may not
		if _, serr := os.Stat(bin); serr != nil {
			return "", "", nil, errors.New("haproxy not found (bash bench/install-haproxy.sh installs it)")
		}
	}
	dir, err := os.MkdirTemp("", "inmesh-bench-haproxy-")
	if err != nil {
		return "", "", nil, err
	}
	e.add(func() { _ = os.RemoveAll(dir) })
	var pids []int
	start := func(name, server string) (string, error) {
		addr, err := freeAddr()
		if err != nil {
			return "", err
		}
		cfg := filepath.Join(dir, name+".cfg")
		if err := os.WriteFile(cfg, fmt.Appendf(nil, haproxyConfig, addr, server), 0o600); err != nil {
			return "", err
		}
		var out bytes.Buffer
		cmd := exec.Command(bin, "-db", "-f", cfg)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return "", fmt.Errorf("haproxy: %w", err)
		}
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(exited)
		}()
		e.add(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		if err := waitListening(addr, exited); err != nil {
			return "", fmt.Errorf("haproxy did not start: %v: %s", err, strings.TrimSpace(out.String()))
		}
		pids = append(pids, cmd.Process.Pid)
		return addr, nil
	}
	if hop1, err = start("hop1", backend); err != nil {
		return "", "", nil, err
	}
	if hop2, err = start("hop2", hop1); err != nil {
		return "", "", nil, err
	}
	cpu = func() time.Duration {
		var sum time.Duration
		for _, p := range pids {
			sum += pidCPU(p)
		}
		return sum
	}
	return hop1, hop2, cpu, nil
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitListening waits until addr accepts connections, the process exits,
// or 10 seconds pass.
func waitListening(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case <-exited:
			return errors.New("exited")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}
