package consul

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/policy"
)

// events collects what a source emits.
type events struct {
	mu   sync.Mutex
	all  []policy.Event
	wake chan struct{}
}

func newEvents() *events { return &events{wake: make(chan struct{}, 1)} }

func (e *events) emit(ev policy.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// next waits (up to a generous bound) for an event at index >= from that
// satisfies ok, and returns its index.
func (e *events) next(t *testing.T, from int, what string, ok func(policy.Event) bool) (policy.Event, int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		e.mu.Lock()
		for i := from; i < len(e.all); i++ {
			if ok(e.all[i]) {
				ev := e.all[i]
				e.mu.Unlock()
				return ev, i + 1
			}
		}
		e.mu.Unlock()
		select {
		case <-e.wake:
		case <-deadline:
			t.Fatalf("no %s event", what)
		}
	}
}

func isSnapshot(ev policy.Event) bool { return ev.Snapshot != nil }
func isError(ev policy.Event) bool    { return ev.Err != nil }

func put(t *testing.T, kv *api.KV, key, value string) {
	t.Helper()
	if _, err := kv.Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestKVSource(t *testing.T) {
	agent := consultest.Start(t)
	kv := agent.Client.KV()
	put(t, kv, "inmesh/defaults", "timeout: 2s")
	put(t, kv, "inmesh/services/billing", `{"endpoints": [{"address": "127.0.0.1:9001"}], "retry": {"attempts": 3}}`)

	src := newKVWatch(agent.Client, "", nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	evs := newEvents()
	wg.Go(func() { _ = src.Watch(ctx, evs.emit) })
	defer func() { cancel(); wg.Wait() }()

	ev, at := evs.next(t, 0, "first snapshot", isSnapshot)
	if b := ev.Snapshot.Service("billing"); b == nil || b.Effective.Attempts != 3 || b.Effective.Timeout != 2*time.Second {
		t.Fatalf("billing: %+v", b)
	}
	if !strings.HasPrefix(ev.Snapshot.Source, "consul:inmesh@") {
		t.Errorf("source %q", ev.Snapshot.Source)
	}

	// An invalid key is rejected on its own, naming key and field.
	put(t, kv, "inmesh/services/billing", "retry: {attempts: 11}")
	ev, at = evs.next(t, at, "rejection", isError)
	if msg := ev.Err.Error(); !strings.Contains(msg, "inmesh/services/billing") || !strings.Contains(msg, "services.billing.retry.attempts: must be 1..10") {
		t.Fatalf("rejection: %v", msg)
	}

	// Another key updates while billing keeps its last good block.
	start := time.Now()
	put(t, kv, "inmesh/services/catalog", "endpoints: [{address: 127.0.0.1:9002}]")
	ev, at = evs.next(t, at, "snapshot with catalog", isSnapshot)
	t.Logf("KV write to snapshot: %v", time.Since(start))
	if ev.Snapshot.Service("catalog") == nil || ev.Snapshot.Service("billing").Effective.Attempts != 3 {
		t.Fatalf("catalog %v billing %+v", ev.Snapshot.Service("catalog"), ev.Snapshot.Service("billing"))
	}

	// A deleted key removes its service.
	if _, err := kv.Delete("inmesh/services/catalog", nil); err != nil {
		t.Fatal(err)
	}
	ev, _ = evs.next(t, at, "snapshot without catalog", func(ev policy.Event) bool {
		return ev.Snapshot != nil && ev.Snapshot.Service("catalog") == nil
	})
	if ev.Snapshot.Service("billing") == nil {
		t.Fatal("billing vanished with catalog")
	}
}

func TestKeysRoundTrip(t *testing.T) {
	doc, err := policy.Parse([]byte(`
defaults: {timeout: 2s}
services:
  billing: {endpoints: [{address: 127.0.0.1:9001}], retry: {attempts: 3}}
  catalog: {endpoints: [{address: 127.0.0.1:9002}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := Keys(doc, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || keys["inmesh/defaults"] == nil || keys["inmesh/services/billing"] == nil {
		t.Fatalf("keys %v", keys)
	}
	blocks := policy.Blocks{Services: map[string]*policy.Service{}}
	blocks.Defaults, err = policy.ParseService(keys["inmesh/defaults"], "defaults")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"billing", "catalog"} {
		if blocks.Services[name], err = policy.ParseService(keys["inmesh/services/"+name], "services."+name); err != nil {
			t.Fatal(err)
		}
	}
	back, rejected := blocks.Assemble(nil)
	if len(rejected) != 0 {
		t.Fatal(rejected)
	}
	h1, _ := policy.Hash(doc)
	h2, _ := policy.Hash(back)
	if h1 != h2 {
		t.Fatalf("hash %s after the round trip through KV, want %s", h2, h1)
	}
}

// A service whose key never held a valid block is known all the same: the
// snapshot names it in Rejected with the reason, so that a mesh fails its
// calls instead of sending them outside; a valid write makes it a service.
func TestKVSourceKeepsRejectedServicesKnown(t *testing.T) {
	agent := consultest.Start(t)
	kv := agent.Client.KV()
	put(t, kv, "inmesh/defaults", "retry: {backoff: {initial: 1s}}")
	put(t, kv, "inmesh/services/billing", "{}")
	put(t, kv, "inmesh/services/ledger", "retry: {attempts: 11}")         // does not parse
	put(t, kv, "inmesh/services/audit", "retry: {backoff: {max: 100ms}}") // parses, but not with the defaults

	src := newKVWatch(agent.Client, "", nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	evs := newEvents()
	wg.Go(func() { _ = src.Watch(ctx, evs.emit) })
	defer func() { cancel(); wg.Wait() }()

	ev, at := evs.next(t, 0, "first snapshot", isSnapshot)
	snap := ev.Snapshot
	if snap.Service("billing") == nil || snap.Service("ledger") != nil || snap.Service("audit") != nil {
		t.Fatalf("services %v", snap.Services)
	}
	for name, want := range map[string]string{
		"ledger": "services.ledger.retry.attempts: must be 1..10",
		"audit":  "services.audit.retry.backoff.max",
	} {
		if reason := snap.Rejected[name]; !strings.Contains(reason, "inmesh/services/"+name) || !strings.Contains(reason, want) {
			t.Errorf("Rejected[%s] = %q, want the key and %q", name, reason, want)
		}
	}
	if len(snap.Rejected) != 2 {
		t.Errorf("Rejected = %v, want ledger and audit", snap.Rejected)
	}

	put(t, kv, "inmesh/services/ledger", "retry: {attempts: 2}")
	ev, _ = evs.next(t, at, "snapshot with ledger", isSnapshot)
	if ev.Snapshot.Service("ledger") == nil || ev.Snapshot.Rejected["ledger"] != "" || ev.Snapshot.Rejected["audit"] == "" {
		t.Fatalf("after a valid write: ledger %v, rejected %v", ev.Snapshot.Service("ledger"), ev.Snapshot.Rejected)
	}
}

// The document's egress and trust_domain are kept in <prefix>/mesh, only
// when the document sets one of them; FromKeys reads them back.
func TestKeysKeepTheGlobalFields(t *testing.T) {
	doc, err := policy.Parse([]byte("egress: deny\ntrust_domain: mesh.local\nservices: {billing: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := Keys(doc, "tenant/")
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	if len(keys) != 2 || keys["tenant/mesh"] == nil || keys["tenant/services/billing"] == nil {
		t.Fatalf("keys %v", keys)
	}
	back, err := FromKeys(keys, "tenant")
	if err != nil {
		t.Fatal(err)
	}
	if back.Egress != policy.EgressDeny || back.TrustDomain != "mesh.local" || back.Services["billing"] == nil {
		t.Fatalf("back %+v", back)
	}
	doc.Egress, doc.TrustDomain = "", ""
	if keys, err := Keys(doc, ""); err != nil || len(keys) != 1 || keys["inmesh/mesh"] != nil {
		t.Fatalf("Keys of a document without global fields: %v %v", keys, err)
	}
	// The global key holds those fields only, checked as in a document.
	for value, want := range map[string]string{
		"egress: maybe":            "egress: must be allow or deny",
		"trust_domain: Mesh Local": "trust_domain: invalid trust domain",
		"services: {billing: {}}":  "services: unknown field",
		"version: v1":              "version: unknown field",
	} {
		_, err := FromKeys(map[string][]byte{"inmesh/mesh": []byte(value)}, "")
		if err == nil || !strings.Contains(err.Error(), "inmesh/mesh: policy: "+want) {
			t.Errorf("FromKeys(mesh: %q) = %v, want %q", value, err, want)
		}
	}
}

// The global key is watched with the others: a valid write applies, an
// invalid one is rejected on its own and the last good one stays.
func TestKVSourceWatchesTheGlobalKey(t *testing.T) {
	agent := consultest.Start(t)
	kv := agent.Client.KV()
	put(t, kv, "inmesh/services/billing", "{}")
	put(t, kv, "inmesh/mesh", "egress: deny")

	src := newKVWatch(agent.Client, "", nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	evs := newEvents()
	wg.Go(func() { _ = src.Watch(ctx, evs.emit) })
	defer func() { cancel(); wg.Wait() }()

	ev, at := evs.next(t, 0, "first snapshot", isSnapshot)
	if ev.Snapshot.Doc.Egress != policy.EgressDeny || ev.Snapshot.Service("billing") == nil {
		t.Fatalf("egress %q, billing %v", ev.Snapshot.Doc.Egress, ev.Snapshot.Service("billing"))
	}
	put(t, kv, "inmesh/mesh", "egress: sometimes")
	ev, at = evs.next(t, at, "rejection", isError)
	if msg := ev.Err.Error(); !strings.Contains(msg, "consul key inmesh/mesh") || !strings.Contains(msg, "egress: must be allow or deny") {
		t.Fatalf("rejection: %v", msg)
	}
	put(t, kv, "inmesh/services/ledger", "{}")
	ev, at = evs.next(t, at, "snapshot with ledger", isSnapshot)
	if ev.Snapshot.Doc.Egress != policy.EgressDeny || ev.Snapshot.Service("ledger") == nil {
		t.Fatalf("after a bad global key: egress %q, ledger %v", ev.Snapshot.Doc.Egress, ev.Snapshot.Service("ledger"))
	}
	if _, err := kv.Delete("inmesh/mesh", nil); err != nil {
		t.Fatal(err)
	}
	evs.next(t, at, "snapshot that allows egress", func(ev policy.Event) bool {
		return ev.Snapshot != nil && ev.Snapshot.Doc.Egress == ""
	})
}

// TestPolicySource is the pull form: it blocks until the first valid
// snapshot, then follows the keys.
func TestPolicySource(t *testing.T) {
	agent := consultest.Start(t)
	kv := agent.Client.KV()
	put(t, kv, "tenant/services/billing", "timeout: 2s")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := NewPolicySource(ctx, agent.Client, "tenant", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if b := src.Current().Service("billing"); b == nil || b.Effective.Timeout != 2*time.Second || src.String() != "consul:tenant" {
		t.Fatalf("billing %+v from %s", b, src)
	}
	changed := src.Changed()
	put(t, kv, "tenant/services/billing", "timeout: 3s")
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("no change")
	}
	if b := src.Current().Service("billing"); b.Effective.Timeout != 3*time.Second {
		t.Fatalf("after the write: %+v", b)
	}

	// A key that never held a valid block leaves its service known and
	// rejected.
	put(t, kv, "broken/services/billing", "retry: {attempts: 11}")
	broken, err := NewPolicySource(ctx, agent.Client, "broken", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer broken.Close()
	if r := broken.Current().Rejected["billing"]; !strings.Contains(r, "services.billing.retry.attempts: must be 1..10") {
		t.Fatalf("Rejected[billing] = %q", r)
	}

	// An agent that does not answer: the constructor fails when ctx ends.
	cfg := api.DefaultConfig()
	cfg.Address = agent.HTTPAddr
	agent.Stop()
	down, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if _, err := NewPolicySource(short, down, "", nil); err == nil ||
		!strings.Contains(err.Error(), "consul: no valid policy under inmesh/ before the context ended") {
		t.Fatalf("NewPolicySource without an agent: %v", err)
	}
}
