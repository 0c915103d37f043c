package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/lkg"
	"github.com/inmesh/inmesh/policy"
)

// ConsulConfig makes HashiCorp Consul the control plane: the policy from
// KV (one key per service under Prefix), endpoints from the catalog's
// health endpoint, this workload's identity from the Connect CA, and the
// authorization of its callers from service-intentions config entries.
type ConsulConfig struct {
	// Client talks to the local Consul agent. Required.
	Client *api.Client
	// Prefix is the KV prefix of the policy; "" means "inmesh".
	Prefix string
}

// WithConsul makes Consul the control plane (see ConsulConfig). It excludes
// WithPolicyFile and WithPolicy.
func WithConsul(cfg ConsulConfig) Option {
	return optionFunc(func(c *config) { c.consul = &cfg })
}

// WithCacheDir keeps the last-known-good policy and endpoints in dir,
// written atomically after each applied update. When the control plane
// does not answer at start, the mesh starts from that cache and says so;
// it never starts from a cache that is corrupt or of another service.
func WithCacheDir(dir string) Option {
	return optionFunc(func(c *config) { c.cacheDir = dir })
}

// Instance is one instance of this workload, as Register puts it in the
// Consul catalog.
type Instance struct {
	// ID is the instance's service ID; "" means <service>-<host>-<port>.
	ID string
	// Address is where the instance serves, host:port.
	Address string
	// Tags and Meta become the instance's labels at its callers:
	// Meta as is, each tag t as "tag:<t>".
	Tags []string
	Meta map[string]string
}

// consulPlane holds the Consul parts of a mesh.
type consulPlane struct {
	cfg        ConsulConfig
	endpoints  *discovery.ConsulSource
	intentions *identity.IntentionsSource
	identity   *identity.ConsulSource

	watchMu sync.Mutex
	watched map[string]chan struct{} // destinations whose endpoints are watched; closed at the first answer
	seen    sync.Map                 // the same, for a lock-free check on the request path

	regMu      sync.Mutex
	registered []string // service IDs Close deregisters
}

// Register adds an instance of this workload to the Consul catalog with a
// TCP health check that Consul runs against inst.Address, so callers only
// see it while it accepts connections. Close deregisters it. Register needs
// WithConsul.
func (m *Mesh) Register(ctx context.Context, inst Instance) error {
	cp := m.consul
	if cp == nil {
		return errors.New("mesh: Register needs WithConsul")
	}
	host, portText, err := net.SplitHostPort(inst.Address)
	if err != nil {
		return fmt.Errorf("mesh: Register: address %q: %w", inst.Address, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("mesh: Register: address %q: bad port", inst.Address)
	}
	id := inst.ID
	if id == "" {
		id = fmt.Sprintf("%s-%s-%d", m.cfg.service, strings.ReplaceAll(host, ":", "_"), port)
	}
	reg := &api.AgentServiceRegistration{
		ID: id, Name: m.cfg.service, Address: host, Port: port, Tags: inst.Tags, Meta: inst.Meta,
		Check: &api.AgentServiceCheck{
			Name:                           "inmesh: " + m.cfg.service + " accepts connections",
			TCP:                            inst.Address,
			Interval:                       "2s",
			Timeout:                        "1s",
			Status:                         api.HealthPassing,
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	if err := cp.cfg.Client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return fmt.Errorf("mesh: registering %s in Consul: %w", id, err)
	}
	cp.regMu.Lock()
	cp.registered = append(cp.registered, id)
	cp.regMu.Unlock()
	m.log.Info("inmesh: registered in Consul", "id", id, "address", inst.Address)
	return nil
}

// closeConsul deregisters the instances and stops the Consul watches.
func (m *Mesh) closeConsul() {
	cp := m.consul
	if cp == nil {
		return
	}
	cp.regMu.Lock()
	ids := cp.registered
	cp.registered = nil
	cp.regMu.Unlock()
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		q := (&api.QueryOptions{}).WithContext(ctx)
		if err := cp.cfg.Client.Agent().ServiceDeregisterOpts(id, q); err != nil {
			m.log.Warn("inmesh: deregistering from Consul failed", "id", id, "err", err)
		}
		cancel()
	}
	if cp.endpoints != nil {
		_ = cp.endpoints.Close()
	}
	if cp.intentions != nil {
		_ = cp.intentions.Close()
	}
	if cp.identity != nil {
		_ = cp.identity.Close()
	}
}

// ensureWatched starts watching the endpoints of service in the Consul
// catalog if it is not watched yet, waits (within ctx, and at most
// firstAnswerWait) for the first answer, and reports whether it started a
// watch. Only the destinations this process calls are watched. The check
// of an already watched service takes no lock.
func (m *Mesh) ensureWatched(ctx context.Context, service string) bool {
	cp := m.consul
	if cp == nil {
		return false
	}
	if _, ok := cp.seen.Load(service); ok {
		return false
	}
	wait := firstAnswerWait
	if len(m.catalog.Load().Endpoints(service)) > 0 {
		wait = 0 // endpoints from the cache serve until the catalog answers
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	cp.watchMu.Lock()
	if ready, ok := cp.watched[service]; ok {
		// Another call started the watch: wait for its first answer too.
		cp.watchMu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
		}
		return true
	}
	ready := make(chan struct{})
	cp.watched[service] = ready
	names := make([]string, 0, len(cp.watched))
	for n := range cp.watched {
		names = append(names, n)
	}
	cp.watchMu.Unlock()
	cp.endpoints.Watch(ctx, names)
	cp.seen.Store(service, struct{}{})
	close(ready)
	return true
}

// firstAnswerWait bounds how long the first call to a destination waits for
// its endpoints from the catalog.
const firstAnswerWait = 5 * time.Second

// mergeEndpoints gives each service of the policy its endpoints: the
// static ones the policy lists, or else those of the catalog.
func mergeEndpoints(pol *policy.Snapshot, catalog *discovery.Snapshot) *discovery.Snapshot {
	static := discovery.Static(pol.Doc)
	if catalog == nil {
		return static
	}
	out := &discovery.Snapshot{Source: discovery.SourceConsul, Services: map[string][]discovery.Endpoint{}}
	for name := range pol.Services {
		if eps := static.Endpoints(name); len(eps) > 0 {
			out.Services[name] = eps
		} else if eps := catalog.Endpoints(name); eps != nil {
			out.Services[name] = eps
		}
	}
	return out
}

// saveCache writes the last-known-good state after an applied update.
func (m *Mesh) saveCache(st *state) {
	if m.cfg.cacheDir == "" {
		return
	}
	err := lkg.Save(m.cfg.cacheDir, &lkg.State{
		Service:   m.cfg.service,
		Written:   m.clock.Now(),
		Source:    st.policy.Source,
		Version:   st.policy.Version,
		Policy:    st.policy.Doc,
		Endpoints: st.endpoints.Services,
		Rejected:  st.policy.Rejected,
	})
	if err != nil {
		m.log.Warn("inmesh: writing the last-known-good cache failed", "dir", m.cfg.cacheDir, "err", err)
	}
}

// cacheWait is how long New waits for the control plane before it starts
// from the last-known-good cache.
const cacheWait = 3 * time.Second

// endpointsFor gives the services of pol their endpoints: with Consul,
// the static ones the policy lists or else the catalog's; without, the
// policy's.
func (m *Mesh) endpointsFor(pol *policy.Snapshot) *discovery.Snapshot {
	if m.consul == nil {
		return discovery.Static(pol.Doc)
	}
	return mergeEndpoints(pol, m.catalog.Load())
}

// onCatalog applies a new snapshot of the catalog's endpoints.
func (m *Mesh) onCatalog(snap *discovery.Snapshot) {
	m.catalog.Store(snap)
	m.reapply()
}

// startFromCache loads the last-known-good state when nothing is in force
// yet, and reports whether it did.
func (m *Mesh) startFromCache() bool {
	st, err := lkg.Load(m.cfg.cacheDir, m.cfg.service)
	if err != nil {
		m.log.Warn("inmesh: the control plane does not answer and the cache cannot serve", "source", m.source.String(), "err", err)
		return false
	}
	snap, err := policy.NewSnapshot(st.Policy, "cache:"+st.Source)
	if err != nil {
		m.log.Warn("inmesh: the cached policy does not validate", "dir", m.cfg.cacheDir, "err", err)
		return false
	}
	snap.Rejected = st.Rejected
	eps := &discovery.Snapshot{Source: "cache", Services: st.Endpoints}
	m.mu.Lock()
	if m.state.Load() != nil { // the control plane answered meanwhile: it wins
		m.mu.Unlock()
		return true
	}
	if m.consul != nil {
		m.catalog.Store(eps)
	}
	m.mu.Unlock()
	m.apply(snap)
	m.log.Warn("inmesh: the control plane does not answer; serving the last-known-good cache",
		"source", m.source.String(), "cached_version", st.Version, "written", st.Written, "dir", m.cfg.cacheDir)
	return true
}

// servingFromCache reports whether the state in force came from the cache.
func (m *Mesh) servingFromCache() bool {
	st := m.state.Load()
	return st != nil && strings.HasPrefix(st.policy.Source, "cache:")
}
