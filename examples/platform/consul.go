package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// ---- the story on a Consul agent (-consul ADDR) ----
//
// With -consul the demo's meshes take everything from the agent: the
// policy from KV under consulPrefix, the endpoints from the catalog (each
// backend registers as a Connect-native instance), the identities from the
// Connect CA, the authorization from service-intentions, and billing's
// routing from config entries (service-defaults, a service-resolver with
// the subsets v1 and v2, a service-router for the canary header and a
// service-splitter), as a fleet already steered by Consul has them. The
// canary phase edits the splitter, not a file.

// consulPrefix is the KV prefix of the demo's policy.
const consulPrefix = "inmesh-demo"

// consulWorld is the agent the demo runs on, and what it wrote there.
type consulWorld struct {
	client  *api.Client
	entries []api.ConfigEntry // written, deleted at the end in reverse order
}

// newConsulWorld connects to the agent at addr.
func newConsulWorld(ctx context.Context, addr string) (*consulWorld, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("platform: consul %s: %w", addr, err)
	}
	if _, err := client.Status().Leader(); err != nil {
		return nil, fmt.Errorf("platform: consul %s: %w", addr, err)
	}
	return &consulWorld{client: client}, nil
}

// option is the control plane of one workload's mesh: each mesh gets its
// own (a consul.ControlPlane serves one mesh).
func (w *consulWorld) option() mesh.Option {
	return mesh.WithControlPlane(consul.New(consul.Config{Client: w.client, Prefix: consulPrefix}))
}

// consulPolicy is doc as the demo keeps it in Consul KV: without the
// static endpoints (the catalog has them), the authorization blocks
// (service-intentions decide), the trust domain (the Connect CA's) and
// billing's subsets and routes (its config entries say them).
func consulPolicy(doc *policy.Document) *policy.Document {
	out := *doc
	out.TrustDomain = ""
	out.Services = make(map[string]*policy.Service, len(doc.Services))
	for name, svc := range doc.Services {
		s := *svc
		s.Endpoints, s.Authorization = nil, nil
		if name == "billing" {
			s.Subsets, s.Routes = nil, nil
		}
		out.Services[name] = &s
	}
	return &out
}

// setUp writes the demo's policy to KV, replacing whatever a previous run
// left, and its config entries.
func (w *consulWorld) setUp(ctx context.Context, doc *policy.Document) error {
	w.cleanKV(ctx)
	keys, err := consul.Keys(consulPolicy(doc), consulPrefix)
	if err != nil {
		return err
	}
	var ops api.KVTxnOps
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: k, Value: keys[k]})
	}
	ok, resp, _, err := w.client.Txn().Txn(toTxn(ops), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("platform: consul: writing the policy: %w", err)
	}
	if !ok {
		return fmt.Errorf("platform: consul: writing the policy: %v", resp.Errors)
	}
	entries := []api.ConfigEntry{}
	for name := range doc.Services {
		protocol := "http"
		if name == "grades" {
			protocol = "grpc"
		}
		entries = append(entries, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: name, Protocol: protocol})
	}
	slices.SortFunc(entries, func(a, b api.ConfigEntry) int { return strings.Compare(a.GetName(), b.GetName()) })
	entries = append(entries,
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "billing", DefaultSubset: "v1",
			Subsets: map[string]api.ServiceResolverSubset{
				"v1": {Filter: `Service.Meta.version == "v1"`},
				"v2": {Filter: `Service.Meta.version == "v2"`},
			}},
		&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "billing", Routes: []api.ServiceRoute{{
			Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{
				Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-canary", Exact: "true"}}}},
			Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"},
		}}},
		billingSplitter(10),
		// Only enrollment may call billing and grades.
		onlyFrom("billing", "enrollment"),
		onlyFrom("grades", "enrollment"),
	)
	for _, e := range entries {
		if err := w.set(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// billingSplitter sends share percent of billing's calls to v2.
func billingSplitter(share int) *api.ServiceSplitterConfigEntry {
	return &api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "billing", Splits: []api.ServiceSplit{
		{Weight: float32(100 - share), ServiceSubset: "v1"},
		{Weight: float32(share), ServiceSubset: "v2"},
	}}
}

// onlyFrom lets caller, and nobody else, call service.
func onlyFrom(service, caller string) *api.ServiceIntentionsConfigEntry {
	return &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: service, Sources: []*api.SourceIntention{
		{Name: caller, Action: api.IntentionActionAllow},
		{Name: "*", Action: api.IntentionActionDeny},
	}}
}

// set writes e, and remembers it for tearDown.
func (w *consulWorld) set(ctx context.Context, e api.ConfigEntry) error {
	if _, _, err := w.client.ConfigEntries().Set(e, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("platform: consul: writing %s %s: %w", e.GetKind(), e.GetName(), err)
	}
	for _, old := range w.entries {
		if old.GetKind() == e.GetKind() && old.GetName() == e.GetName() {
			return nil
		}
	}
	w.entries = append(w.entries, e)
	return nil
}

// shiftCanary edits billing's service-splitter to share percent for v2.
func (w *consulWorld) shiftCanary(ctx context.Context, share int) error {
	return w.set(ctx, billingSplitter(share))
}

// tearDown deletes what setUp wrote, the entries in reverse order (a
// splitter before the resolver and the defaults it depends on).
func (w *consulWorld) tearDown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for _, e := range slices.Backward(w.entries) {
		if _, err := w.client.ConfigEntries().Delete(e.GetKind(), e.GetName(), (&api.WriteOptions{}).WithContext(ctx)); err != nil {
			errs = append(errs, fmt.Errorf("platform: consul: deleting %s %s: %w", e.GetKind(), e.GetName(), err))
		}
	}
	w.entries = nil
	w.cleanKV(ctx)
	return errors.Join(errs...)
}

// cleanKV deletes the demo's policy and status keys.
func (w *consulWorld) cleanKV(ctx context.Context) {
	for _, p := range []string{consulPrefix + "/", consulPrefix + "-status/"} {
		_, _ = w.client.KV().DeleteTree(p, (&api.WriteOptions{}).WithContext(ctx))
	}
}

func toTxn(ops api.KVTxnOps) api.TxnOps {
	out := make(api.TxnOps, len(ops))
	for i, op := range ops {
		out[i] = &api.TxnOp{KV: op}
	}
	return out
}
