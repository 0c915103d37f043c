package policy

import (
	"errors"
	"strings"
	"testing"
)

func mustService(t *testing.T, yaml, path string) *Service {
	t.Helper()
	s, err := ParseService([]byte(yaml), path)
	if err != nil {
		t.Fatalf("ParseService(%s): %v", path, err)
	}
	return s
}

func TestParseServiceNamesItsPath(t *testing.T) {
	tests := []struct {
		yaml, path, want string
	}{
		{"retry: {attempts: 11}", "services.billing", "services.billing.retry.attempts: must be 1..10"},
		{"retry: {attempts: 0}", "services.billing", "services.billing.retry.attempts: must be 1..10"},
		{"outlier_detection: {base_ejection: 2562047h}", "services.billing", "services.billing.outlier_detection.base_ejection: must be at most 8760h"},
		{"timeout: 1s\n#" + strings.Repeat("x", MaxDocumentSize), "services.billing", "services.billing: document too large: 8388621 bytes"},
		{"endpoints: [" + strings.Repeat("{},", maxNodes) + "]", "services.billing", "services.billing: document too large: more than 450000 YAML nodes"},
		{"timeout: soon", "defaults", "defaults.timeout"},
		{"tiemout: 1s", "services.billing", "services.billing.tiemout: unknown field"},
		{"", "services.billing", "empty document"},
		{`{"endpoints": [{"address": "nohost"}]}`, "services.billing", "services.billing.endpoints[0].address"},
	}
	for _, tc := range tests {
		_, err := ParseService([]byte(tc.yaml), tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseService(%q) = %v, want it to contain %q", tc.yaml, err, tc.want)
		}
	}
}

func TestAssembleRejectsBlocksOnTheirOwn(t *testing.T) {
	good := Blocks{
		Defaults: mustService(t, "timeout: 2s", "defaults"),
		Services: map[string]*Service{
			"billing": mustService(t, `
endpoints: [{address: 127.0.0.1:9001, labels: {version: v1}}]
subsets: {v1: {version: v1}}
routes: [{name: all, split: [{subset: v1, weight: 1}]}]`, "services.billing"),
			"catalog": mustService(t, "endpoints: [{address: 127.0.0.1:9002}]", "services.catalog"),
		},
	}
	prev, rejected := good.Assemble(nil)
	if prev == nil || len(rejected) != 0 {
		t.Fatalf("good blocks: %v %v", prev, rejected)
	}

	// billing now names a subset it lacks (valid alone, not as a document);
	// catalog changes validly: catalog updates, billing keeps its block.
	next := Blocks{
		Defaults: good.Defaults,
		Services: map[string]*Service{
			"billing": mustService(t, `
endpoints: [{address: 127.0.0.1:9001, labels: {version: v1}}]
routes: [{name: all, split: [{subset: v2, weight: 1}]}]`, "services.billing"),
			"catalog": mustService(t, "endpoints: [{address: 127.0.0.1:9003}]", "services.catalog"),
			"a.b":     mustService(t, "timeout: 1s", `services["a.b"]`),
		},
	}
	doc, rejected := next.Assemble(prev)
	if doc == nil {
		t.Fatal("no document")
	}
	if len(rejected) != 1 || rejected["services.billing"] == nil {
		t.Fatalf("rejected %v, want billing only", rejected)
	}
	if doc.Services["billing"] != prev.Services["billing"] {
		t.Error("billing did not keep its last good block")
	}
	if doc.Services["catalog"].Endpoints[0].Address != "127.0.0.1:9003" || doc.Services["a.b"] == nil {
		t.Error("the good blocks did not update")
	}

	// A new service that never validated stays absent.
	bad := Blocks{Services: map[string]*Service{"ledger": {Routes: []Route{{Split: []WeightedSubset{{Subset: "x", Weight: 1}}}}}}}
	doc, rejected = bad.Assemble(prev)
	if doc == nil || rejected["services.ledger"] == nil || doc.Services["ledger"] != nil || doc.Services["billing"] != nil {
		t.Fatalf("doc %+v rejected %v", doc, rejected)
	}
}
