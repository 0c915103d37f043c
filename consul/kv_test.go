package policy_test

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

func TestConsulSource(t *testing.T) {
	agent := consultest.Start(t)
	kv := agent.Client.KV()
	put(t, kv, "inmesh/defaults", "timeout: 2s")
	put(t, kv, "inmesh/services/billing", `{"endpoints": [{"address": "127.0.0.1:9001"}], "retry": {"attempts": 3}}`)

	src := policy.NewConsulSource(agent.Client, "", nil)
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

func TestConsulKeysRoundTrip(t *testing.T) {
	doc, err := policy.Parse([]byte(`
defaults: {timeout: 2s}
services:
  billing: {endpoints: [{address: 127.0.0.1:9001}], retry: {attempts: 3}}
  catalog: {endpoints: [{address: 127.0.0.1:9002}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := policy.ConsulKeys(doc, "")
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
func TestConsulSourceKeepsRejectedServicesKnown(t *testing.T) {
	agent := consultest.Start(t)
	kv := agent.Client.KV()
	put(t, kv, "inmesh/defaults", "retry: {backoff: {initial: 1s}}")
	put(t, kv, "inmesh/services/billing", "{}")
	put(t, kv, "inmesh/services/ledger", "retry: {attempts: 11}")         // does not parse
	put(t, kv, "inmesh/services/audit", "retry: {backoff: {max: 100ms}}") // parses, but not with the defaults

	src := policy.NewConsulSource(agent.Client, "", nil)
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

// egress is no block of Consul KV: a document that denies egress is
// refused rather than pushed as one that allows it.
func TestConsulKeysRefusesEgressDeny(t *testing.T) {
	doc, err := policy.Parse([]byte("egress: deny\nservices: {billing: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.ConsulKeys(doc, ""); err == nil || !strings.HasPrefix(err.Error(), "policy: egress: deny cannot be kept in Consul KV") {
		t.Fatalf("ConsulKeys: %v", err)
	}
	doc.Egress = policy.EgressAllow
	if keys, err := policy.ConsulKeys(doc, ""); err != nil || len(keys) != 1 {
		t.Fatalf("ConsulKeys of egress: allow: %v %v", keys, err)
	}
}
