package mesh

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// connCounter counts the connections a server holds open.
type connCounter struct{ open atomic.Int64 }

func (c *connCounter) hook(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		c.open.Add(1)
	case http.StateClosed, http.StateHijacked:
		c.open.Add(-1)
	}
}

// clientConnGoroutines returns the number of goroutines that serve
// client connections of net/http (HTTP/1 read and write loops, HTTP/2 read
// loops) and whose ids are not in before.
func clientConnGoroutines(before map[string]bool) int {
	n := 0
	for id, stack := range goroutineStacks() {
		if before[id] {
			continue
		}
		if strings.Contains(stack, "net/http.(*persistConn).readLoop") ||
			strings.Contains(stack, "net/http.(*persistConn).writeLoop") ||
			strings.Contains(stack, "net/http.(*http2ClientConn).readLoop") {
			n++
		}
	}
	return n
}

// goroutineStacks returns the stack of every goroutine by its id.
func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		head, _, _ := bytes.Cut(g, []byte(" ["))
		out[string(bytes.TrimPrefix(head, []byte("goroutine ")))] = string(g)
	}
	return out
}

func goroutineIDs() map[string]bool {
	ids := map[string]bool{}
	for id := range goroutineStacks() {
		ids[id] = true
	}
	return ids
}

// TestIdleConnectionsOfDepartedEndpointsClose: when an endpoint leaves
// the policy, the idle connections to it close at once, not at their idle
// timeout; HTTPClient().CloseIdleConnections() closes every idle
// connection the mesh keeps, the mTLS ones included; the goroutines that
// served them end. Over plaintext HTTP/1.1, and mTLS HTTP/1.1 and HTTP/2.
func TestIdleConnectionsOfDepartedEndpointsClose(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mtls, h2 bool
	}{
		{"plaintext", false, false},
		{"mTLS", true, false},
		{"mTLS h2", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := goroutineIDs()
			var a, b connCounter
			start := func(c *connCounter) string {
				s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					_, _ = io.WriteString(w, "ok")
				}))
				s.Config.ConnState = c.hook
				if tc.mtls {
					srv := newTestMesh(t, meshtest.FleetPolicy(s.Listener.Addr().String()), WithService("billing"))
					s.Config.Handler = srv.Handler(s.Config.Handler)
					s.TLS = srv.ServerTLSConfig()
					s.EnableHTTP2 = tc.h2
					s.StartTLS()
				} else {
					s.Start()
				}
				t.Cleanup(s.Close)
				return s.Listener.Addr().String()
			}
			addrA, addrB := start(&a), start(&b)
			tlsLine := ""
			if !tc.mtls {
				tlsLine = "defaults: {tls: disable}\n"
			}
			doc := func(version string, addrs ...string) string {
				var eps []string
				for _, addr := range addrs {
					eps = append(eps, "{address: "+addr+"}")
				}
				return fmt.Sprintf("version: %s\ntrust_domain: mesh.local\n%sservices:\n  billing:\n    endpoints: [%s]\n  admin: {}\n",
					version, tlsLine, strings.Join(eps, ", "))
			}
			path := filepath.Join(t.TempDir(), "mesh.yaml")
			meshtest.WriteFile(t, path, doc("r1", addrA, addrB))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := New(ctx, WithService("admin"), WithPolicyFile(path), WithLogger(meshtest.QuietLogger()))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()

			// Concurrent calls open several connections to each endpoint
			// (one each over HTTP/2).
			callAll := func() {
				var wg sync.WaitGroup
				for range 8 {
					wg.Go(func() {
						for range 4 {
							if code, _, err := get(t, m, "http://billing/x"); err != nil || code != 200 {
								t.Errorf("call: %d %v", code, err)
							}
						}
					})
				}
				wg.Wait()
			}
			callAll()
			if a.open.Load() == 0 || b.open.Load() == 0 {
				t.Fatalf("open connections: a %d, b %d; want some to each", a.open.Load(), b.open.Load())
			}
			t.Logf("after calls: %d connections open to a, %d to b", a.open.Load(), b.open.Load())

			meshtest.WriteFile(t, path, doc("r2", addrA))
			meshtest.Eventually(t, 5*time.Second, "r2 applied", func() bool { return m.PolicyVersion() == "r2" })
			meshtest.Eventually(t, 5*time.Second, "the connections to the departed endpoint closed", func() bool { return b.open.Load() == 0 })

			callAll()
			if a.open.Load() == 0 {
				t.Fatal("no connection open to a")
			}
			m.HTTPClient().CloseIdleConnections()
			meshtest.Eventually(t, 5*time.Second, "CloseIdleConnections closed the connections to a", func() bool { return a.open.Load() == 0 })
			meshtest.Eventually(t, 5*time.Second, "the client connections' goroutines ended", func() bool { return clientConnGoroutines(before) == 0 })
		})
	}
}
