package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// scriptedPlane is a control plane whose policy source emits a valid
// document, then a rejection, and closes rejected once both are applied.
type scriptedPlane struct {
	doc      *policy.Document
	rejected chan struct{}
}

func (p *scriptedPlane) Policy(mesh.Workload) (policy.Source, error) { return p, nil }
func (p *scriptedPlane) Endpoints(mesh.Workload) (mesh.EndpointSource, error) {
	return nil, nil
}
func (p *scriptedPlane) Identity(context.Context, mesh.Workload) (identity.Source, error) {
	return nil, nil
}
func (p *scriptedPlane) Authorizer(mesh.Workload) (*mesh.Authorization, error) { return nil, nil }
func (p *scriptedPlane) Register(context.Context, mesh.Workload, mesh.Instance) error {
	return mesh.ErrNoCatalog
}
func (p *scriptedPlane) Close() error   { return nil }
func (p *scriptedPlane) String() string { return "scripted" }

func (p *scriptedPlane) Watch(ctx context.Context, emit func(policy.Event)) error {
	snap, err := policy.NewSnapshot(p.doc, "scripted")
	if err != nil {
		return err
	}
	emit(policy.Event{Snapshot: snap})
	emit(policy.Event{Err: errors.New("policy: services.billing.retry.attempts: must be 1..10")})
	close(p.rejected)
	<-ctx.Done()
	return ctx.Err()
}

// TestStatusAdmin reads a real mesh's admin handler: a breaker opened by
// a failed call, a fault in force, and a rejected update.
func TestStatusAdmin(t *testing.T) {
	backend := meshtest.NewBackend(t, "billing", meshtest.Status(http.StatusServiceUnavailable))
	doc, err := policy.Parse(fmt.Appendf(nil, `
version: status-1
defaults: {tls: disable}
services:
  billing:
    endpoints: [{address: %s}]
    circuit_breaker: {consecutive_failures: 1, open_for: 1h}
  ledger:
    endpoints: [{address: 127.0.0.1:1}]
    fault: {abort: {percent: 5}, only_with_header: x-inmesh-fault}
`, backend.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	plane := &scriptedPlane{doc: doc, rejected: make(chan struct{})}
	m, err := mesh.New(t.Context(), mesh.WithService("checkout"), mesh.WithControlPlane(plane), mesh.WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	<-plane.rejected

	admin := httptest.NewServer(http.StripPrefix("/debug/inmesh", m.AdminHandler()))
	defer admin.Close()
	url := admin.URL + "/debug/inmesh"
	runStatus := func(args ...string) (string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(append([]string{"status"}, args...), &out, &errOut); code != 0 {
			t.Fatalf("status %v: exit %d: %s", args, code, errOut.String())
		}
		return out.String(), errOut.String()
	}

	// Before any call: every breaker closed.
	out, _ := runStatus("--admin", url)
	for _, w := range []string{
		"service:  checkout\n",
		"policy:   status-1 (sha256:",
		"source:   scripted\n",
		"loaded:   20",
		"updates:  1 applied, 1 rejected\n",
		"rejected: last at ",
		" from scripted: policy: services.billing.retry.attempts: must be 1..10\n",
		"breakers: all closed\n",
		"FAULT:    injected toward ledger: abort (HTTP 503, gRPC unavailable) on 5%, only with header x-inmesh-fault\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("status lacks %q:\n%s", w, out)
		}
	}

	// One failed call opens billing's breaker.
	resp, err := m.HTTPClient().Get("http://billing/x")
	if err == nil {
		resp.Body.Close()
	}
	out, _ = runStatus("--admin", url+"/")
	if !strings.Contains(out, "breaker:  billing: open\n") || strings.Contains(out, "all closed") {
		t.Errorf("status after the failure:\n%s", out)
	}

	out, _ = runStatus("-o", "json", "--admin", url)
	var st struct {
		Service         string `json:"service"`
		Version         string `json:"version"`
		Source          string `json:"source"`
		UpdatesApplied  int    `json:"updates_applied"`
		UpdatesRejected int    `json:"updates_rejected"`
		LastRejection   *struct {
			Error string `json:"error"`
		} `json:"last_rejection"`
		Breakers []struct {
			Service, State string
		} `json:"breakers_not_closed"`
		Faults []struct {
			Service string `json:"service"`
		} `json:"faults_active"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if st.Service != "checkout" || st.Version != "status-1" || st.Source != "scripted" || st.UpdatesApplied != 1 || st.UpdatesRejected != 1 ||
		st.LastRejection == nil || !strings.Contains(st.LastRejection.Error, "attempts") ||
		len(st.Breakers) != 1 || st.Breakers[0].Service != "billing" || st.Breakers[0].State != "open" ||
		len(st.Faults) != 1 || st.Faults[0].Service != "ledger" {
		t.Errorf("status -o json: %+v\n%s", st, out)
	}
}

func TestStatusErrors(t *testing.T) {
	notAdmin := httptest.NewServer(http.NotFoundHandler())
	defer notAdmin.Close()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "no source", args: []string{"status"}, wantCode: 2, wantErr: "usage: inmesh status"},
		{name: "not an admin handler", args: []string{"status", "--admin", notAdmin.URL}, wantCode: 1, wantErr: "inmesh status: GET " + notAdmin.URL + "/config: 404"},
		{name: "bad url", args: []string{"status", "--admin", "http://127.0.0.1:1"}, wantCode: 1, wantErr: "inmesh status:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != tc.wantCode || !strings.Contains(errOut.String(), tc.wantErr) {
				t.Fatalf("exit %d, want %d; stderr %q, want %q", code, tc.wantCode, errOut.String(), tc.wantErr)
			}
		})
	}
}
