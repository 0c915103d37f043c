package discovery

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/internal/blocking"
)

// SourceConsul is the Source of snapshots built from the Consul catalog.
const SourceConsul = "consul"

// TagLabel is the label an instance gets for each of its Consul tags, with
// the value "true": the tag canary becomes "tag:canary".
func TagLabel(tag string) string { return "tag:" + tag }

// ConsulSource watches, in the Consul catalog, the passing instances of the
// services this process calls (the health endpoint, one blocking query per
// service), and publishes a Snapshot of them after every change. An
// instance's labels are its Service.Meta plus TagLabel(t) = "true" for each
// tag t. A failed query never empties a service: the last answer stays.
//
// ConsulSource is safe for concurrent use. Close stops its goroutines.
type ConsulSource struct {
	health   *api.Health
	log      *slog.Logger
	onUpdate func(*Snapshot)

	mu      sync.Mutex
	watches map[string]*serviceWatch
	current map[string][]Endpoint
	closed  bool
	wg      sync.WaitGroup
	emitMu  sync.Mutex // serializes onUpdate calls; each reads the latest state
}

type serviceWatch struct {
	cancel context.CancelFunc
	ready  chan struct{} // closed at the first answer
}

// NewConsulSource returns a source that calls onUpdate with each new
// snapshot. A nil logger means slog.Default().
func NewConsulSource(client *api.Client, logger *slog.Logger, onUpdate func(*Snapshot)) *ConsulSource {
	if logger == nil {
		logger = slog.Default()
	}
	return &ConsulSource{
		health:   client.Health(),
		log:      logger,
		onUpdate: onUpdate,
		watches:  map[string]*serviceWatch{},
		current:  map[string][]Endpoint{},
	}
}

// Watch sets the services to watch: it starts a watch for each new one,
// stops the watches of services no longer named, and waits until every new
// service has had its first answer or ctx ends (the watches go on then).
func (s *ConsulSource) Watch(ctx context.Context, services []string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	want := map[string]bool{}
	var waits []chan struct{}
	for _, name := range services {
		want[name] = true
		if _, ok := s.watches[name]; ok {
			continue
		}
		// The watch outlives this call (whose ctx only bounds the wait for
		// a first answer); Close, or dropping the service, cancels it.
		wctx, cancel := context.WithCancel(context.Background())
		w := &serviceWatch{cancel: cancel, ready: make(chan struct{})}
		s.watches[name] = w
		waits = append(waits, w.ready)
		s.wg.Go(func() { s.run(wctx, name, w) })
	}
	removed := false
	for name, w := range s.watches {
		if !want[name] {
			w.cancel()
			delete(s.watches, name)
			delete(s.current, name)
			removed = true
		}
	}
	s.mu.Unlock()
	if removed {
		s.publish()
	}
	for _, ready := range waits {
		select {
		case <-ready:
		case <-ctx.Done():
			return
		}
	}
}

// run watches one service until ctx ends.
func (s *ConsulSource) run(ctx context.Context, service string, w *serviceWatch) {
	var once sync.Once
	loop := &blocking.Loop{
		Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute, AllowStale: true}).WithContext(ctx)
			entries, meta, err := s.health.Service(service, "", true, q)
			if err != nil {
				return blocking.Result{}, err
			}
			s.set(service, endpointsOf(entries))
			once.Do(func() { close(w.ready) })
			return blocking.Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
		},
		OnError: func(err error, failures int, wait time.Duration) {
			if failures == 1 || failures%10 == 0 {
				s.log.Warn("inmesh: consul health watch failed; the endpoints in force stay",
					"service", service, "failures", failures, "retry_in", wait, "err", err)
			}
		},
	}
	_ = loop.Run(ctx)
}

// set records a service's endpoints and publishes when they changed.
func (s *ConsulSource) set(service string, eps []Endpoint) {
	s.mu.Lock()
	if _, watched := s.watches[service]; !watched || slices.EqualFunc(s.current[service], eps, sameEndpoint) && s.current[service] != nil {
		s.mu.Unlock()
		return
	}
	s.current[service] = eps
	s.mu.Unlock()
	s.publish()
}

// publish hands a snapshot of the current endpoints to onUpdate.
func (s *ConsulSource) publish() {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.mu.Lock()
	snap := &Snapshot{Source: SourceConsul, Services: maps.Clone(s.current)}
	s.mu.Unlock()
	if s.onUpdate != nil {
		s.onUpdate(snap)
	}
}

// Current returns a snapshot of the endpoints known now.
func (s *ConsulSource) Current() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Snapshot{Source: SourceConsul, Services: maps.Clone(s.current)}
}

// Close stops every watch and waits for them. It is safe to call twice.
func (s *ConsulSource) Close() error {
	s.mu.Lock()
	s.closed = true
	for name, w := range s.watches {
		w.cancel()
		delete(s.watches, name)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// endpointsOf turns health entries into endpoints, sorted by address.
func endpointsOf(entries []*api.ServiceEntry) []Endpoint {
	eps := make([]Endpoint, 0, len(entries))
	for _, e := range entries {
		if e.Service == nil {
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
		eps = append(eps, Endpoint{Address: net.JoinHostPort(host, strconv.Itoa(e.Service.Port)), Labels: labels})
	}
	slices.SortFunc(eps, func(a, b Endpoint) int {
		switch {
		case a.Address < b.Address:
			return -1
		case a.Address > b.Address:
			return 1
		}
		return 0
	})
	return eps
}

func sameEndpoint(a, b Endpoint) bool {
	return a.Address == b.Address && maps.Equal(a.Labels, b.Labels)
}
