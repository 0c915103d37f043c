package core

import (
	"maps"
	"slices"
	"testing"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
)

// reuseDoc is a policy of five services; front splits to ledger. The
// fields are the blocks a case changes.
type reuseDoc struct{ defaults, billingTimeout, ledgerTLS string }

func (d reuseDoc) text() string {
	def, bt, lt := d.defaults, d.billingTimeout, d.ledgerTLS
	if def == "" {
		def = "{retry: {attempts: 2}}"
	}
	if bt == "" {
		bt = "1s"
	}
	if lt == "" {
		lt = "strict"
	}
	return `version: v1
defaults: ` + def + `
services:
  billing:
    circuit_breaker: {consecutive_failures: 1, open_for: 1h}
    outlier_detection: {consecutive_failures: 1, base_ejection: 1m, max_ejection_percent: 100}
    routes: [{name: charge, timeout: ` + bt + `}]
  ledger:
    tls: ` + lt + `
  audit: {}
  search: {}
  front:
    routes:
      - name: r
        split: [{weight: 1}, {service: ledger, weight: 1}]
`
}

// reuseEndpoints are the endpoints of reuseDoc's services, each time new
// slices; ledger's address is ledger, and audit has none, for why.
func reuseEndpoints(ledger, why string) *discovery.Snapshot {
	s := &discovery.Snapshot{Source: "test", Services: map[string][]discovery.Endpoint{
		"billing": {{Address: "10.0.0.1:80", Labels: map[string]string{"v": "1"}}, {Address: "10.0.0.2:80"}},
		"ledger":  {{Address: ledger}},
		"search":  {{Address: "10.0.3.1:80"}},
		"front":   {{Address: "10.0.4.1:80"}},
	}}
	if why != "" {
		s.Why = map[string]string{"audit": why}
	}
	return s
}

// TestCompileReusesUnchanged: a compilation after a change reuses the
// destination of every service whose inputs (its resolved service, its
// endpoints and why it has none, those of the services its splits call)
// did not change, and compiles the others.
func TestCompileReusesUnchanged(t *testing.T) {
	base := mustSnapshot(t, reuseDoc{}.text())
	// one changes name's block in base, as a write of that block does: the
	// other services keep their resolved pointers.
	one := func(name string, d reuseDoc) *policy.Snapshot {
		return withService(base, "v2", name, mustSnapshot(t, d.text()))
	}
	all := []string{"audit", "billing", "front", "ledger", "search"}
	for _, tc := range []struct {
		name     string
		pol      *policy.Snapshot
		eps      *discovery.Snapshot
		compiled []string // the services compiled again, sorted
	}{
		{"a new version only", withService(base, "v2", "billing", base), reuseEndpoints("10.0.1.1:80", ""), nil},
		{"one service's block", one("billing", reuseDoc{billingTimeout: "2s"}), reuseEndpoints("10.0.1.1:80", ""), []string{"billing"}},
		{"a split target's block", one("ledger", reuseDoc{ledgerTLS: "disable"}), reuseEndpoints("10.0.1.1:80", ""), []string{"front", "ledger"}},
		{"a split target's endpoints", base, reuseEndpoints("10.0.1.2:80", ""), []string{"front", "ledger"}},
		{"why a service has no endpoints", base, reuseEndpoints("10.0.1.1:80", "no Connect-capable instance"), []string{"audit"}},
		{"the defaults", mustSnapshot(t, reuseDoc{defaults: "{retry: {attempts: 3}}"}.text()), reuseEndpoints("10.0.1.1:80", ""), all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := benchEnv(t)
			before, reg := Compile(env, NewRegistry(), base, reuseEndpoints("10.0.1.1:80", ""))
			after, _ := Compile(env, reg, tc.pol, tc.eps)
			var compiled []string
			for name, d := range after {
				if d != before[name] {
					compiled = append(compiled, name)
				}
			}
			slices.Sort(compiled)
			if !slices.Equal(compiled, tc.compiled) {
				t.Fatalf("compiled %v again, want %v", compiled, tc.compiled)
			}
			if !slices.Equal(slices.Sorted(maps.Keys(after)), all) {
				t.Fatalf("destinations %v", slices.Sorted(maps.Keys(after)))
			}
			if rt := after["front"].Routes[0]; rt.Split[1].Pool.Hosts[0].Address != tc.eps.Endpoints("ledger")[0].Address {
				t.Errorf("front's split to ledger calls %s", rt.Split[1].Pool.Hosts[0].Address)
			}
		})
	}
}

// TestReusedKeepsItsParts: a destination reused by two compilations keeps
// its breaker, and its state, and the registry keeps its parts: the
// compilation that then changes its block finds the same breaker, outlier
// detection and hosts, as a compilation of an unchanged block always did.
func TestReusedKeepsItsParts(t *testing.T) {
	env := benchEnv(t)
	base := mustSnapshot(t, reuseDoc{}.text())
	d1, reg := Compile(env, NewRegistry(), base, reuseEndpoints("10.0.1.1:80", ""))
	b := d1["billing"]
	tk, err := b.Breaker.Allow()
	if err != nil {
		t.Fatal(err)
	}
	tk.Done(true)
	if b.Breaker.State() != "open" {
		t.Fatalf("breaker %s, want open", b.Breaker.State())
	}
	for i, ledger := range []string{"10.0.1.2:80", "10.0.1.3:80"} {
		var ds map[string]*Destination
		ds, reg = Compile(env, reg, withService(base, "v"+ledger, "ledger", mustSnapshot(t, reuseDoc{}.text())), reuseEndpoints(ledger, ""))
		if ds["billing"] != b || ds["ledger"] == d1["ledger"] {
			t.Fatalf("compilation %d: billing compiled again, or ledger not", i+2)
		}
	}
	if len(reg.breakers) != 1 || len(reg.outliers) != 1 {
		t.Fatalf("the registry holds %d breakers and %d outlier detections, want billing's", len(reg.breakers), len(reg.outliers))
	}
	ds, _ := Compile(env, reg, withService(base, "v4", "billing", mustSnapshot(t, reuseDoc{billingTimeout: "3s"}.text())), reuseEndpoints("10.0.1.3:80", ""))
	nb := ds["billing"]
	if nb == b || nb.Routes[0].Eff.Timeout.String() != "3s" {
		t.Fatal("billing's new block was not compiled")
	}
	if nb.Breaker != b.Breaker || nb.Breaker.State() != "open" || nb.Outlier != b.Outlier || nb.Routes[0].All.Hosts[0] != b.Routes[0].All.Hosts[0] {
		t.Fatal("billing's breaker, outlier detection or hosts were lost while it was reused")
	}
}

// TestCompileReleasesParts: the parts of a destination that leaves (its
// service removed) or is compiled anew leave the registry; the ones
// another destination shares stay.
func TestCompileReleasesParts(t *testing.T) {
	env := benchEnv(t)
	base := mustSnapshot(t, reuseDoc{}.text())
	eps := reuseEndpoints("10.0.1.1:80", "")
	_, reg := Compile(env, NewRegistry(), base, eps)
	hosts := len(reg.hosts)
	noBilling := *base
	noBilling.Services = maps.Clone(base.Services)
	delete(noBilling.Services, "billing")
	ds, reg := Compile(env, reg, &noBilling, eps)
	if len(ds) != 4 || len(reg.breakers) != 0 || len(reg.outliers) != 0 || len(reg.hosts) != hosts-2 || len(reg.dests) != 4 {
		t.Fatalf("after billing left: %d destinations, %d breakers, %d outlier detections, %d hosts (want %d)",
			len(ds), len(reg.breakers), len(reg.outliers), len(reg.hosts), hosts-2)
	}
	// ledger's host is ledger's and front's (its split): compiled anew,
	// ledger keeps it for front, which is not.
	ledgerHost := ds["front"].Routes[0].Split[1].Pool.Hosts[0]
	ds, reg = Compile(env, reg, withService(&noBilling, "v3", "ledger", mustSnapshot(t, reuseDoc{}.text())), eps)
	if ds["ledger"].Routes[0].All.Hosts[0] != ledgerHost || len(reg.hosts) != hosts-2 {
		t.Fatalf("ledger's host was made anew (%d hosts held)", len(reg.hosts))
	}
}
