package mesh

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newTestMesh starts a mesh for service "tester" on the policy in yamlDoc.
func newTestMesh(t testing.TB, yamlDoc string, opts ...Option) *Mesh {
	t.Helper()
	doc, err := policy.Parse([]byte(yamlDoc))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := append([]Option{WithService("tester"), WithPolicy(doc), WithLogger(meshtest.QuietLogger())}, opts...)
	m, err := New(ctx, all...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// get sends a GET through the mesh client and returns status and body.
func get(t testing.TB, m *Mesh, url string, hdr ...string) (int, string, error) {
	t.Helper()
	return do(t, m, http.MethodGet, url, "", hdr...)
}

func do(t testing.TB, m *Mesh, method, url, body string, hdr ...string) (int, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := m.HTTPClient().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
