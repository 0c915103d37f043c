package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
)

// TestValidateConsul: validate --consul warns of each field of the file
// that a config entry of a real agent overrides, and of no other.
func TestValidateConsul(t *testing.T) {
	agent := consultest.Start(t)
	for _, e := range []api.ConfigEntry{
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "billing", Protocol: "http"},
		&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "billing", Splits: []api.ServiceSplit{{Weight: 100}}},
	} {
		if _, _, err := agent.Client.ConfigEntries().Set(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "mesh.yaml")
	meshtest.WriteFile(t, file, `services:
  billing:
    subsets: {v1: {version: v1}}
    routes: [{split: [{subset: v1, weight: 1}]}]
    retry: {budget: {ratio: 0.1}}
  ledger:
    timeout: 1s
`)
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", "--consul", agent.HTTPAddr, file}, &out, &errOut); code != 0 {
		t.Fatalf("validate --consul: %d %s", code, errOut.String())
	}
	want := file + ": warning: shadowed by a Consul config entry: services.billing.routes (service-splitter/billing)\n"
	if errOut.String() != want || !strings.Contains(out.String(), "valid") {
		t.Fatalf("stderr %q, want %q; stdout %q", errOut.String(), want, out.String())
	}
	out.Reset()
	if code := run([]string{"validate", "-o", "json", "--consul", agent.HTTPAddr, file}, &out, &errOut); code != 0 {
		t.Fatalf("validate -o json --consul: %d", code)
	}
	var res validateResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res.Warnings) != 1 || !res.Valid {
		t.Fatalf("%s %v", out.String(), err)
	}
}
