package consultest

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"
)

// Counter is a reverse proxy on 127.0.0.1 in front of an agent that counts
// the requests it forwards, so a test can tell a watch that blocks from one
// that spins. Safe for concurrent use.
type Counter struct {
	// Client talks to the agent through the proxy.
	Client *api.Client

	mu       sync.Mutex
	byPath   map[string]int // requests started, by URL path
	inFlight map[string]int // requests not answered yet, by URL path
	noToken  map[string]int // requests without an ACL token, by URL path
}

// Counting starts a counting proxy in front of a for t; it is closed when
// t ends. Close the clients of Counter.Client before (their long polls hold
// the proxy open).
func (a *Agent) Counting(t testing.TB) *Counter {
	t.Helper()
	target, err := url.Parse("http://" + a.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	c := &Counter{byPath: map[string]int{}, inFlight: map[string]int{}, noToken: map[string]int{}}
	forward := &http.Transport{}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     forward,
		FlushInterval: -1,
		// A client that gives up on its long poll is no error worth a log.
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) },
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		c.mu.Lock()
		c.byPath[path]++
		c.inFlight[path]++
		if r.Header.Get("X-Consul-Token") == "" && r.URL.Query().Get("token") == "" {
			c.noToken[path]++
		}
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.inFlight[path]--
			c.mu.Unlock()
		}()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		forward.CloseIdleConnections()
	})
	cfg := api.DefaultConfig()
	cfg.Address = strings.TrimPrefix(srv.URL, "http://")
	cfg.Transport = &http.Transport{}
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cfg.Transport.CloseIdleConnections)
	c.Client = client
	return c
}

// Requests returns the number of requests started so far, by URL path.
func (c *Counter) Requests() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.byPath)
}

// WithoutToken returns the number of requests that carried no ACL token
// (no X-Consul-Token header, no token parameter), by URL path.
func (c *Counter) WithoutToken() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.noToken)
}

// InFlight returns the number of requests not answered yet, by URL path:
// the open long polls, for a client that is idle.
func (c *Counter) InFlight() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for p, n := range c.inFlight {
		if n > 0 {
			out[p] = n
		}
	}
	return out
}
