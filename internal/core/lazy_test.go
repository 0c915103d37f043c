package core

import (
	"maps"
	"slices"
	"testing"
)

// TestCompileActive: CompileActive compiles the services asked for and
// those their splits call, CompileMore adds one into a copy, and the
// compilations after it keep every one of them (reused), while the other
// services of the policy stay uncompiled; a service that leaves the
// policy lets its parts go.
func TestCompileActive(t *testing.T) {
	env := benchEnv(t)
	base := mustSnapshot(t, reuseDoc{}.text())
	eps := reuseEndpoints("10.0.1.1:80", "")
	ds, reg := CompileActive(env, NewRegistry(), base, eps, "front", "nosuch")
	if got := slices.Sorted(maps.Keys(ds)); !slices.Equal(got, []string{"front", "ledger"}) {
		t.Fatalf("compiled %v, want front and ledger (its split)", got)
	}
	if len(reg.breakers) != 0 {
		t.Fatalf("%d breakers held: billing's compiled", len(reg.breakers))
	}
	more, billing := CompileMore(env, reg, base, eps, ds, "billing")
	if billing == nil || more["billing"] != billing || more["front"] != ds["front"] || len(more) != 3 || len(ds) != 2 {
		t.Fatalf("CompileMore: %v into %v (the first map must stay)", slices.Sorted(maps.Keys(more)), slices.Sorted(maps.Keys(ds)))
	}
	if again, d := CompileMore(env, reg, base, eps, more, "billing"); d != billing || len(again) != 3 {
		t.Fatal("CompileMore of a compiled service compiled it again")
	}
	if _, d := CompileMore(env, reg, base, eps, more, "nosuch"); d != nil {
		t.Fatal("CompileMore of no service of the policy")
	}
	// An update of audit, not compiled, compiles nothing.
	next, reg := CompileActive(env, reg, withService(base, "v2", "audit", mustSnapshot(t, reuseDoc{billingTimeout: "2s"}.text())), eps)
	if !maps.Equal(next, more) {
		t.Fatalf("after an update of audit: %v, want the destinations of before", slices.Sorted(maps.Keys(next)))
	}
	noBilling := *base
	noBilling.Services = maps.Clone(base.Services)
	delete(noBilling.Services, "billing")
	last, reg := CompileActive(env, reg, &noBilling, eps)
	if len(last) != 2 || len(reg.breakers) != 0 || len(reg.outliers) != 0 || len(reg.dests) != 2 {
		t.Fatalf("after billing left: %d destinations, %d breakers, %d outlier detections held", len(last), len(reg.breakers), len(reg.outliers))
	}
}

// TestPreview: a preview of a service is what a compilation would make,
// with parts of its own that the registry does not hold.
func TestPreview(t *testing.T) {
	env := benchEnv(t)
	base := mustSnapshot(t, reuseDoc{}.text())
	eps := reuseEndpoints("10.0.1.1:80", "")
	_, reg := CompileActive(env, NewRegistry(), base, eps)
	d := Preview(env, base, eps, "billing")
	if d == nil || d.Breaker == nil || len(d.Routes) != 1 || len(d.Routes[0].All.Hosts) != 2 {
		t.Fatalf("preview %+v", d)
	}
	if len(reg.breakers) != 0 || len(reg.dests) != 0 {
		t.Fatal("the preview's parts are in the registry")
	}
	if Preview(env, base, eps, "nosuch") != nil {
		t.Fatal("preview of no service of the policy")
	}
}
