package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/meshtest"
)

func TestPolicyFileReload(t *testing.T) {
	v1 := meshtest.NewBackend(t, "v1", nil)
	v2 := meshtest.NewBackend(t, "v2", nil)
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	doc := func(version string, w1, w2 int) string {
		return fmt.Sprintf(`
version: %q
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints:
      - {address: %s, labels: {version: v1}}
      - {address: %s, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: default
        split: [{subset: v1, weight: %d}, {subset: v2, weight: %d}]
`, version, v1.Addr(), v2.Addr(), w1, w2)
	}
	meshtest.WriteFile(t, path, doc("r1", 100, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, WithService("tester"), WithPolicyFile(path), WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, body, err := get(t, m, "http://billing/x"); err != nil || body != "v1" {
		t.Fatalf("r1: %q %v", body, err)
	}

	start := time.Now()
	meshtest.WriteFile(t, path, doc("r2", 0, 100))
	meshtest.Eventually(t, 5*time.Second, "edit applied", func() bool { return m.PolicyVersion() == "r2" })
	t.Logf("policy edit applied after %v", time.Since(start))
	if _, body, err := get(t, m, "http://billing/x"); err != nil || body != "v2" {
		t.Fatalf("r2: %q %v", body, err)
	}

	// An invalid edit changes nothing and is shown by the admin handler.
	meshtest.WriteFile(t, path, strings.Replace(doc("r3", 0, 100), "weight: 100", "weight: -1", 1))
	meshtest.Eventually(t, 5*time.Second, "rejection recorded", func() bool { return m.rejects.Load() > 0 })
	if m.PolicyVersion() != "r2" {
		t.Fatalf("an invalid edit replaced the policy: %s", m.PolicyVersion())
	}
	if _, body, err := get(t, m, "http://billing/x"); err != nil || body != "v2" {
		t.Fatalf("after invalid edit: %q %v", body, err)
	}
	rec := httptest.NewRecorder()
	m.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/config", nil))
	var cv struct {
		Version       string `json:"version"`
		Source        string `json:"source"`
		LastRejection *struct {
			Error string `json:"error"`
		} `json:"last_rejection"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &cv); err != nil {
		t.Fatal(err)
	}
	if cv.Version != "r2" || cv.LastRejection == nil || !strings.Contains(cv.LastRejection.Error, "weight") ||
		!strings.HasPrefix(cv.Source, "file:") {
		t.Fatalf("/config: %s", rec.Body.String())
	}
}

func TestNewWaitsForAValidPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	meshtest.WriteFile(t, path, "services: {billing: {retry: {attempts: 11}}}")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := New(ctx, WithService("tester"), WithPolicyFile(path), WithLogger(meshtest.QuietLogger()))
	if err == nil || !strings.Contains(err.Error(), "services.billing.retry.attempts") {
		t.Fatalf("New on an invalid file: %v", err)
	}
}

func TestOptionErrors(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		want string
	}{
		{"no service", []Option{WithPolicyFile("x.yaml")}, "WithService"},
		{"no control plane", []Option{WithService("a")}, "control plane"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
