package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// startMesh starts a mesh for enrollment on a policy document.
func startMesh(doc string) *mesh.Mesh {
	d, err := policy.Parse([]byte(doc))
	if err != nil {
		log.Fatal(err)
	}
	m, err := mesh.New(context.Background(),
		mesh.WithService("enrollment"),
		mesh.WithPolicy(d),
		mesh.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	)
	if err != nil {
		log.Fatal(err)
	}
	return m
}

func ExampleMesh_HTTPClient() {
	billing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "charged via %s", r.Host)
	}))
	defer billing.Close()

	m := startMesh(`
services:
  billing:
    endpoints: [{address: ` + strings.TrimPrefix(billing.URL, "http://") + `}]
    timeout: 2s
    tls: disable # a plain server; see ExampleMesh_Handler for mTLS
`)
	defer m.Close()

	// The URL host names the destination service; the mesh picks the endpoint.
	resp, err := m.HTTPClient().Post("http://billing/charge", "application/json", strings.NewReader(`{"amount":42}`))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 charged via billing
}

func ExampleCallError() {
	m := startMesh(`
version: "2026-11-26.1"
services:
  billing:
    endpoints: [{address: 127.0.0.1:9001}]
    routes:
      - name: charge
        match: {path_prefix: /charge}
`)
	defer m.Close()

	_, err := m.HTTPClient().Get("http://billing/refund")
	var ce *mesh.CallError
	if errors.As(err, &ce) {
		fmt.Println("layer:", ce.Layer)
		fmt.Println("service:", ce.Service)
		fmt.Println("policy:", ce.PolicyVersion)
	}
	// Output:
	// layer: route
	// service: billing
	// policy: 2026-11-26.1
}

func ExampleMesh_Explain() {
	m := startMesh(`
services:
  billing:
    endpoints:
      - {address: 127.0.0.1:9001, labels: {version: v1}}
      - {address: 127.0.0.1:9002, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    retry: {attempts: 3}
    routes:
      - name: canary-by-header
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: default
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`)
	defer m.Close()

	req, _ := http.NewRequest(http.MethodGet, "http://billing/invoices", nil)
	ex, err := m.Explain(req)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ex.Route, ex.Split, ex.Attempts)
	fmt.Println(ex.Endpoints)
	// Output:
	// default [{v1 90} {v2 10}] 3
	// [127.0.0.1:9001 127.0.0.1:9002]
}
