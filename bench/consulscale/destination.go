package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/mesh"
)

// The destination the callers call runs in a process of its own, as it
// would in production: its server's goroutines and memory for each
// caller's connection are not counted as the callers'.

// destinationFlags are the flags of the destination's process (hidden:
// consulscale passes them to itself).
type destinationFlags struct {
	name, prefix, agentCA string
}

var destFlags destinationFlags

// startDestination starts this program as the destination's process on
// the agent, and returns once it is registered; stop ends it (its mesh
// deregisters on the way out).
func startDestination(ag *agent, name, prefix string) (stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-agent", ag.addr, "-destination", name, "-prefix", prefix}
	if useHTTPS {
		args = append(args, "-https", "-agent-ca", ag.caFile)
	}
	cmd := exec.Command(exe, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		_ = stdin.Close() // the process ends when its stdin does
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		stop()
		return nil, fmt.Errorf("the destination's process did not start: %q %v\n%s", line, err, stderr.String())
	}
	return stop, nil
}

// serveDestination is the destination's process: a mesh on the agent,
// serving over mutual TLS and registered, until its stdin ends.
func serveDestination(agentAddr string) error {
	if destFlags.agentCA != "" {
		pem, err := os.ReadFile(destFlags.agentCA)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("-agent-ca: no certificate")
		}
		agentTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	ctx := context.Background()
	client, err := newClient(agentAddr, nil)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	dest, err := mesh.New(ctx, mesh.WithService(destFlags.name), mesh.WithLogger(logger),
		mesh.WithControlPlane(consul.New(consul.Config{Client: client, Prefix: destFlags.prefix})))
	if err != nil {
		return fmt.Errorf("the destination's mesh: %w", err)
	}
	defer dest.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: dest.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })),
		TLSConfig: dest.ServerTLSConfig(), ReadHeaderTimeout: 5 * time.Second,
		// The agent's TCP check connects and hangs up without a handshake.
		ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer srv.Close()
	if err := dest.Register(ctx, mesh.Instance{Address: ln.Addr().String()}); err != nil {
		return err
	}
	fmt.Println("ready", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}
