package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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
