package mesh

import (
	"strings"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/lkg"
	"github.com/inmesh/inmesh/policy"
)

// WithCacheDir keeps the last-known-good policy and endpoints in dir,
// written atomically after each applied update. When the control plane
// does not answer at start, the mesh starts from that cache and says so;
// it never starts from a cache that is corrupt or of another service.
func WithCacheDir(dir string) Option {
	return optionFunc(func(c *config) { c.cacheDir = dir })
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
		m.log.Warn("writing the last-known-good cache failed", "dir", m.cfg.cacheDir, "err", err)
	}
}

// cacheWait is how long New waits for the control plane before it starts
// from the last-known-good cache.
const cacheWait = 3 * time.Second

// startFromCache loads the last-known-good state when nothing is in force
// yet, and reports whether it did.
func (m *Mesh) startFromCache() bool {
	st, err := lkg.Load(m.cfg.cacheDir, m.cfg.service)
	if err != nil {
		m.log.Warn("the control plane does not answer and the cache cannot serve", "source", m.source.String(), "err", err)
		return false
	}
	snap, err := policy.NewSnapshot(st.Policy, "cache:"+st.Source)
	if err != nil {
		m.log.Warn("the cached policy does not validate", "dir", m.cfg.cacheDir, "err", err)
		return false
	}
	snap.Rejected = st.Rejected
	eps := &discovery.Snapshot{Source: "cache", Services: st.Endpoints}
	m.mu.Lock()
	if m.state.Load() != nil { // the control plane answered meanwhile: it wins
		m.mu.Unlock()
		return true
	}
	if m.endpoints != nil {
		m.catalog.Store(eps)
	}
	m.mu.Unlock()
	m.apply(snap)
	m.statusChanged()
	m.log.Warn("the control plane does not answer; serving the last-known-good cache",
		"source", m.source.String(), "cached_version", st.Version, "written", st.Written, "dir", m.cfg.cacheDir)
	return true
}

// servingFromCache reports whether the state in force came from the cache.
func (m *Mesh) servingFromCache() bool {
	st := m.state.Load()
	return st != nil && strings.HasPrefix(st.policy.Source, "cache:")
}
