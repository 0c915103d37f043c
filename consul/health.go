package consul

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul/internal/blocking"
	"github.com/inmesh/inmesh/discovery"
)

// SourceCatalog is the Source of the endpoint snapshots built from the
// Consul catalog.
const SourceCatalog = "consul"

// TagLabel is the label an instance gets for each of its Consul tags, with
// the value "true": the tag canary becomes "tag:canary".
func TagLabel(tag string) string { return "tag:" + tag }

// EndpointSource watches, in the Consul catalog, the passing
// Connect-capable instances of the services this process calls (the
// connect health endpoint, /v1/health/connect/<service>, one blocking query
// per service), and publishes a discovery.Snapshot of them after every
// change. Consul answers that endpoint with two kinds of instance, and both
// are reached with mutual TLS, the peer proving the service's identity:
//
//   - a Connect-native instance (an inmesh Register, or any registration
//     with Connect.Native), at its own address and port;
//   - for an instance behind an Envoy sidecar, the sidecar's registration
//     (a connect-proxy whose Proxy.DestinationServiceName is the service),
//     at the sidecar's address and port, never the service's own port, which
//     only the sidecar calls.
//
// The address is Service.Address, else the node's address. An instance's
// labels are its Service.Meta plus TagLabel(t) = "true" for each tag t; for
// a sidecar, those of the sidecar's registration, which is what the caller
// reaches and what Consul itself filters on (a sidecar_service takes its
// parent's tags and meta unless it sets its own). A plain instance, neither
// Connect-native nor behind a sidecar, is not listed: it could not prove
// its identity. A failed query never empties a service: the last answer
// stays.
//
// EndpointSource is safe for concurrent use. Close stops its goroutines.
type EndpointSource struct {
	health *api.Health
	token  string // ACL token of the queries; "": the Client's own
	log    *slog.Logger
	val    value[discovery.Snapshot]

	// entries, when set, is the control plane's policy source of config
	// entries: Watch also starts the discovery chain's watch, and each
	// instance gets the labels of its resolver subsets.
	entries *configEntries

	mu      sync.Mutex
	watches map[string]*serviceWatch
	current map[string][]discovery.Endpoint
	raw     map[string][]*api.ServiceEntry // the last answer, to relabel
	why     map[string]string              // why a service has no endpoints, when it has plain instances
	closed  bool
}

type serviceWatch struct {
	cancel context.CancelFunc
	ready  chan struct{} // closed at the first answer
}

// NewEndpointSource starts watching services in the catalog and returns
// once each has had its first answer, or ctx ends (then it stops and
// returns the error). Watch adds services later. The watches outlive ctx;
// Close stops them. A nil logger means slog.Default().
func NewEndpointSource(ctx context.Context, client *api.Client, services []string, logger *slog.Logger) (*EndpointSource, error) {
	if client == nil {
		return nil, errNoClient
	}
	s := startEndpoints(client, orDefault(logger))
	for _, name := range services {
		s.Watch(ctx, name)
	}
	if ctx.Err() != nil {
		s.Close()
		return nil, fmt.Errorf("consul: no endpoints of %s before the context ended: %w", strings.Join(services, ", "), ctx.Err())
	}
	return s, nil
}

// startEndpoints returns a source that watches nothing yet.
func startEndpoints(client *api.Client, logger *slog.Logger) *EndpointSource {
	s := &EndpointSource{
		health:  client.Health(),
		log:     logger,
		watches: map[string]*serviceWatch{},
		current: map[string][]discovery.Endpoint{},
		raw:     map[string][]*api.ServiceEntry{},
	}
	s.val.start()
	s.val.cur.Store(&discovery.Snapshot{Source: SourceCatalog, Services: map[string][]discovery.Endpoint{}})
	return s
}

// Watch starts watching service, unless it is watched already, and returns
// once it has had its first answer or ctx ends (the watch goes on then).
func (s *EndpointSource) Watch(ctx context.Context, service string) {
	if s.entries != nil {
		// The first call is routed under the chain: wait for it too.
		chain := s.entries.watchChain(service)
		defer func() {
			select {
			case <-chain:
			case <-ctx.Done():
			}
		}()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	w, ok := s.watches[service]
	if !ok {
		w = &serviceWatch{ready: make(chan struct{})}
		// The watch outlives this call (whose ctx only bounds the wait
		// for a first answer); Close, or Unwatch, cancels it.
		var wctx context.Context
		wctx, w.cancel = context.WithCancel(s.val.ctx)
		s.watches[service] = w
		s.val.run(func(context.Context) { s.run(wctx, service, w) })
	}
	s.mu.Unlock()
	select {
	case <-w.ready:
	case <-ctx.Done():
	}
}

// FindService implements mesh.ServiceFinder: with the control plane's
// config entries, whether service, which the policy does not hold, is a
// service Consul knows (a Connect-capable instance, or a service-router,
// -splitter or -resolver entry of that name); when it is, the policy in
// force holds it before FindService returns. A source of
// NewEndpointSource knows no more services than the policy.
func (s *EndpointSource) FindService(ctx context.Context, service string) bool {
	return s.entries != nil && s.entries.findService(ctx, service)
}

// StopWatching implements mesh.WatchStopper: it stops watching service
// (its connect health and, with config entries, its discovery chain) and
// keeps its last endpoints and chain in force, until the next Watch of
// service starts again, without waiting for an answer. The mesh calls it
// for a destination it has not called for a while.
func (s *EndpointSource) StopWatching(service string) {
	s.mu.Lock()
	w, ok := s.watches[service]
	if ok {
		w.cancel()
		delete(s.watches, service)
	}
	s.mu.Unlock()
	if ok && s.entries != nil {
		s.entries.unwatchChain(service)
	}
}

// Unwatch stops watching service and drops its endpoints.
func (s *EndpointSource) Unwatch(service string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.watches[service]
	if !ok {
		return
	}
	w.cancel()
	delete(s.watches, service)
	delete(s.current, service)
	delete(s.raw, service)
	delete(s.why, service)
	s.publishLocked()
}

// run watches one service until ctx ends.
func (s *EndpointSource) run(ctx context.Context, service string, w *serviceWatch) {
	var once sync.Once
	explained := false // whether this empty spell of service was explained
	loop := &blocking.Loop{
		Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
			q := query(&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute, AllowStale: true}, s.token).WithContext(ctx)
			// With config entries, warning instances count (unless a
			// resolver subset says OnlyPassing), as for Envoy.
			entries, meta, err := s.health.Connect(service, "", s.entries == nil, q)
			if err != nil {
				return blocking.Result{}, err
			}
			n := s.set(service, w, entries)
			once.Do(func() { close(w.ready) })
			if n > 0 {
				explained = false
			} else if !explained {
				// After the first answer is out, so that it never waits
				// for this one.
				explained = true
				s.explainEmpty(ctx, service)
			}
			return blocking.Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
		},
		OnError: func(err error, failures int, wait time.Duration) {
			if failures == 1 || failures%10 == 0 {
				s.log.Warn("consul health watch failed; the endpoints in force stay",
					"service", service, "failures", failures, "retry_in", wait, "err", err)
			}
		},
	}
	_ = loop.Run(ctx)
}

// explainEmpty logs, once per spell without endpoints, a service that has
// passing instances, none of them Connect-capable: the usual mistake of a
// registration without Connect.Native and without a sidecar, which the
// mesh never calls (it could not verify them). It asks the plain health
// endpoint once, without blocking.
func (s *EndpointSource) explainEmpty(ctx context.Context, service string) {
	q := query(&api.QueryOptions{AllowStale: true}, s.token).WithContext(ctx)
	plain, _, err := s.health.Service(service, "", true, q)
	if err != nil || len(plain) == 0 {
		return
	}
	s.log.Warn("consul: no Connect-capable instance of the service (Connect-native, or behind a connect-proxy sidecar): the mesh calls none of its plain instances",
		"service", service, "plain_instances", len(plain))
	// The calls that find no endpoint say it too.
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, watched := s.watches[service]; !watched || len(s.current[service]) > 0 {
		return
	}
	if s.why == nil {
		s.why = map[string]string{}
	}
	instances := "instances"
	if len(plain) == 1 {
		instances = "instance"
	}
	s.why[service] = fmt.Sprintf("Consul has %d passing %s of it, none Connect-capable (register them Connect-native, or behind a connect-proxy sidecar)", len(plain), instances)
	s.publishLocked()
}

// set records the instances of service that its watch w got, publishes
// when its endpoints changed, and returns how many endpoints it has.
func (s *EndpointSource) set(service string, w *serviceWatch, entries []*api.ServiceEntry) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watches[service] != w {
		return 0 // stopped (and maybe started again): a late answer
	}
	s.raw[service] = entries
	s.setLocked(service)
	return len(s.current[service])
}

// relabel recomputes the labels of service's instances, after its
// resolver subsets changed.
func (s *EndpointSource) relabel(service string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.raw[service]; ok {
		s.setLocked(service)
	}
}

func (s *EndpointSource) setLocked(service string) {
	var extra func(*api.ServiceEntry, string) map[string]string
	if s.entries != nil {
		extra = func(e *api.ServiceEntry, status string) map[string]string {
			return s.entries.hub.subsetLabels(service, e, status)
		}
	}
	eps := endpointsOf(s.raw[service], extra)
	if slices.EqualFunc(s.current[service], eps, sameEndpoint) && s.current[service] != nil {
		return
	}
	s.current[service] = eps
	s.publishLocked()
}

// publishLocked publishes a snapshot of the current endpoints; s.mu is
// held, so snapshots are published in the order of the changes.
func (s *EndpointSource) publishLocked() {
	for service := range s.why {
		if len(s.current[service]) > 0 {
			delete(s.why, service)
		}
	}
	var why map[string]string
	if len(s.why) > 0 {
		why = maps.Clone(s.why)
	}
	s.val.set(&discovery.Snapshot{Source: SourceCatalog, Services: maps.Clone(s.current), Why: why})
}

// Current returns the endpoints known now, of every watched service. The
// snapshot must not be modified.
func (s *EndpointSource) Current() *discovery.Snapshot { return s.val.load() }

// Changed returns a channel closed at the next change of Current.
func (s *EndpointSource) Changed() <-chan struct{} { return s.val.changed() }

// Close stops every watch and waits for them. It is safe to call twice.
func (s *EndpointSource) Close() error {
	s.mu.Lock()
	s.closed = true
	for name, w := range s.watches {
		w.cancel()
		delete(s.watches, name)
	}
	s.mu.Unlock()
	s.val.close()
	return nil
}

// endpointsOf turns connect health entries into endpoints, sorted by
// address, leaving out the critical ones: each entry's Service is the
// instance to dial, the service's own (Connect-native) or its sidecar's
// (connect-proxy). extra, when not nil, gives an instance's labels beyond
// its meta and tags, knowing its status.
func endpointsOf(entries []*api.ServiceEntry, extra func(e *api.ServiceEntry, status string) map[string]string) []discovery.Endpoint {
	eps := make([]discovery.Endpoint, 0, len(entries))
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		status := e.Checks.AggregatedStatus()
		if status == api.HealthCritical || status == api.HealthMaint {
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		labels := make(map[string]string, len(e.Service.Meta)+len(e.Service.Tags))
		maps.Copy(labels, e.Service.Meta)
		for _, t := range e.Service.Tags {
			labels[TagLabel(t)] = "true"
		}
		if extra != nil {
			maps.Copy(labels, extra(e, status))
		}
		eps = append(eps, discovery.Endpoint{Address: net.JoinHostPort(host, strconv.Itoa(e.Service.Port)), Labels: labels})
	}
	slices.SortFunc(eps, func(a, b discovery.Endpoint) int { return strings.Compare(a.Address, b.Address) })
	return eps
}

func sameEndpoint(a, b discovery.Endpoint) bool {
	return a.Address == b.Address && maps.Equal(a.Labels, b.Labels)
}
