package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/inmesh/inmesh/mesh"
)

// ---- enrollment's admin handler, served while the demo runs ----

// adminPrefix is where the admin handler is mounted.
const adminPrefix = "/debug/inmesh"

// adminServer serves m's admin handler on addr (127.0.0.1:0 picks a port).
type adminServer struct {
	srv    *http.Server
	url    string // ".../debug/inmesh/"
	client *http.Client
	wg     sync.WaitGroup
}

func serveAdmin(addr string, m *mesh.Mesh) (*adminServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("platform: admin: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(adminPrefix+"/", http.StripPrefix(adminPrefix, m.AdminHandler()))
	a := &adminServer{
		srv:    &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		url:    "http://" + ln.Addr().String() + adminPrefix + "/",
		client: &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second},
	}
	a.wg.Go(func() { _ = a.srv.Serve(ln) })
	return a, nil
}

func (a *adminServer) close() {
	_ = a.srv.Close()
	a.wg.Wait()
	a.client.CloseIdleConnections()
}

// adminConfig is the part of /config the report tells.
type adminConfig struct {
	Version         string `json:"version"`
	Source          string `json:"source"`
	UpdatesApplied  int64  `json:"updates_applied"`
	UpdatesRejected int64  `json:"updates_rejected"`
}

// config fetches /config over HTTP, as an operator would.
func (a *adminServer) config(ctx context.Context) (adminConfig, error) {
	var c adminConfig
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url+"config", nil)
	if err != nil {
		return c, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return c, fmt.Errorf("platform: admin /config: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("platform: admin /config: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return c, fmt.Errorf("platform: admin /config: %w", err)
	}
	return c, nil
}

// explain fetches /explain for method and target, as caller ("" for
// enrollment itself), over HTTP.
func (a *adminServer) explain(ctx context.Context, method, target, caller string) (*mesh.Explanation, error) {
	q := url.Values{"url": {target}, "method": {method}}
	if caller != "" {
		q.Set("caller", caller)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url+"explain?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("platform: admin /explain: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("platform: admin /explain: %s", resp.Status)
	}
	ex := new(mesh.Explanation)
	if err := json.NewDecoder(resp.Body).Decode(ex); err != nil {
		return nil, fmt.Errorf("platform: admin /explain: %w", err)
	}
	return ex, nil
}

// summary is one line of what an explanation says.
func summary(ex *mesh.Explanation) string {
	route := ex.Route
	if route == "" {
		route = "(none: the service's settings)"
	}
	parts := []string{"route " + route}
	if len(ex.Split) > 0 {
		// As shares: a split from a service-splitter has Consul's
		// weights times 100.
		var split []string
		total := totalWeight(ex.Split)
		for _, s := range ex.Split {
			split = append(split, fmt.Sprintf("%s %g%%", s.Subset, float64(100*s.Weight)/float64(max(total, 1))))
		}
		parts = append(parts, "split "+strings.Join(split, " / "))
	}
	attempts := fmt.Sprintf("attempts %d", ex.Attempts)
	if ex.Reasons.Attempts != "" {
		attempts += " (" + ex.Reasons.Attempts + ")"
	}
	parts = append(parts, attempts)
	if ex.HasBreaker {
		parts = append(parts, "breaker "+ex.Breaker)
	}
	if ex.Authorization != "" {
		parts = append(parts, fmt.Sprintf("for %s: %s", ex.Caller, ex.Authorization))
	}
	parts = append(parts, "policy "+ex.PolicyVersion)
	return strings.Join(parts, ", ")
}
