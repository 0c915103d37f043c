package consul

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/mesh"
)

var _ mesh.StatusReporter = (*ControlPlane)(nil)

// statusPrefix is cfg's StatusPrefix, cleaned, or Prefix + "-status".
func statusPrefix(cfg Config) string {
	if cfg.StatusPrefix != "" {
		return strings.TrimSuffix(cfg.StatusPrefix, "/")
	}
	return cleanPrefix(cfg.Prefix) + "-status"
}

// ReportStatus implements mesh.StatusReporter: it writes st as JSON at
// <StatusPrefix>/<service>/<instance>. Close deletes the keys it wrote;
// an instance that dies without closing leaves its key, which FleetStatus
// counts as stale once the catalog no longer has the instance.
func (cp *ControlPlane) ReportStatus(ctx context.Context, st mesh.PolicyStatus) error {
	if err := cp.check(); err != nil {
		return err
	}
	value, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("consul: status of %s: %w", st.Instance, err)
	}
	key := cp.cfg.StatusPrefix + "/" + st.Service + "/" + st.Instance
	if _, err := cp.cfg.Client.KV().Put(&api.KVPair{Key: key, Value: value}, write(&api.WriteOptions{}, cp.cfg.Token).WithContext(ctx)); err != nil {
		err = denied(err, keyRule(cp.cfg.StatusPrefix), "write", "the status reports under "+cp.cfg.StatusPrefix+"/")
		return fmt.Errorf("consul: writing the status %s: %w", key, err)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if !slices.Contains(cp.reported, key) {
		cp.reported = append(cp.reported, key)
	}
	return nil
}

// ServiceStatus is the policy versions the registered instances of one
// service applied, as FleetStatus reads them.
type ServiceStatus struct {
	Service string `json:"service"`
	// Versions maps each policy version to the instances that applied it
	// and are in the catalog.
	Versions map[string][]mesh.PolicyStatus `json:"versions"`
	// Cached counts the instances serving from their last-known-good cache.
	Cached int `json:"cached"`
	// Stale are reports of instances the catalog no longer has (they
	// ended without closing their mesh).
	Stale []mesh.PolicyStatus `json:"stale,omitempty"`
}

// FleetStatus reads what every registered instance reported under the
// status prefix of cfg (see Config.StatusPrefix) and returns it per
// service, in name order, as `inmesh status --consul` shows it: how many
// instances run which policy version. A report whose instance the catalog
// no longer lists is stale, and counted apart.
func FleetStatus(ctx context.Context, cfg Config) ([]ServiceStatus, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("consul: FleetStatus: no Client")
	}
	prefix := statusPrefix(cfg)
	pairs, _, err := cfg.Client.KV().List(prefix+"/", query(&api.QueryOptions{}, cfg.Token).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul: reading %s/: %w", prefix, err)
	}
	byService := map[string]*ServiceStatus{}
	live := map[string]map[string]bool{} // service -> instance IDs in the catalog
	for _, p := range pairs {
		var st mesh.PolicyStatus
		if err := json.Unmarshal(p.Value, &st); err != nil || st.Service == "" || st.Instance == "" {
			continue // not a report of ours
		}
		ss := byService[st.Service]
		if ss == nil {
			ss = &ServiceStatus{Service: st.Service, Versions: map[string][]mesh.PolicyStatus{}}
			byService[st.Service] = ss
			entries, _, err := cfg.Client.Catalog().Service(st.Service, "", query(&api.QueryOptions{}, cfg.Token).WithContext(ctx))
			if err != nil {
				return nil, fmt.Errorf("consul: catalog of %s: %w", st.Service, err)
			}
			ids := map[string]bool{}
			for _, e := range entries {
				ids[e.ServiceID] = true
			}
			live[st.Service] = ids
		}
		if !live[st.Service][st.Instance] {
			ss.Stale = append(ss.Stale, st)
			continue
		}
		ss.Versions[st.Version] = append(ss.Versions[st.Version], st)
		if st.Cached {
			ss.Cached++
		}
	}
	out := make([]ServiceStatus, 0, len(byService))
	for _, name := range slices.Sorted(maps.Keys(byService)) {
		ss := byService[name]
		for v := range ss.Versions {
			slices.SortFunc(ss.Versions[v], func(a, b mesh.PolicyStatus) int { return cmp.Compare(a.Instance, b.Instance) })
		}
		out = append(out, *ss)
	}
	return out, nil
}
