package lkg

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/atomicfile"
	"github.com/inmesh/inmesh/policy"
)

// formatVersion is the version of the file format.
const formatVersion = 1

// State is what the cache holds for one workload.
type State struct {
	Service   string                          `json:"service"`
	Written   time.Time                       `json:"written"`
	Source    string                          `json:"source"` // where the policy came from
	Version   string                          `json:"version"`
	Policy    *policy.Document                `json:"policy"`
	Endpoints map[string][]discovery.Endpoint `json:"endpoints,omitempty"`
	// Rejected is the policy's Rejected: services known without a valid
	// policy, which a mesh served from the cache must still fail.
	Rejected map[string]string `json:"rejected,omitempty"`
}

// file is the on-disk form: the state and a checksum of its encoding.
type file struct {
	Format   int             `json:"format"`
	Checksum string          `json:"checksum"` // sha256 of State's compact JSON
	State    json.RawMessage `json:"state"`
}

// ErrNoCache reports that the directory holds no cache for the service.
var ErrNoCache = errors.New("lkg: no cache")

// Path is the cache file of service in dir.
func Path(dir, service string) string {
	return filepath.Join(dir, "inmesh-"+service+".json")
}

// Save writes st for st.Service into dir atomically.
func Save(dir string, st *State) error {
	if st.Service == "" || st.Policy == nil {
		return errors.New("lkg: a cache needs a service and a policy")
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("lkg: encoding: %w", err)
	}
	sum := sha256.Sum256(raw)
	data, err := json.MarshalIndent(file{Format: formatVersion, Checksum: hex.EncodeToString(sum[:]), State: raw}, "", "  ")
	if err != nil {
		return fmt.Errorf("lkg: encoding: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lkg: %w", err)
	}
	if err := atomicfile.Write(Path(dir, st.Service), data, 0o600); err != nil {
		return fmt.Errorf("lkg: %w", err)
	}
	return nil
}

// Load reads the cache of service from dir. It refuses a corrupt file, the
// cache of another service, and a policy that does not validate, saying
// which; a missing file is ErrNoCache.
func Load(dir, service string) (*State, error) {
	path := Path(dir, service)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w for %s in %s", ErrNoCache, service, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("lkg: %w", err)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("lkg: %s is corrupt: %w", path, err)
	}
	if f.Format != formatVersion {
		return nil, fmt.Errorf("lkg: %s has format %d, want %d", path, f.Format, formatVersion)
	}
	// The file is indented; the checksum is over the compact encoding.
	var compact bytes.Buffer
	if err := json.Compact(&compact, f.State); err != nil {
		return nil, fmt.Errorf("lkg: %s is corrupt: %w", path, err)
	}
	sum := sha256.Sum256(compact.Bytes())
	if hex.EncodeToString(sum[:]) != f.Checksum {
		return nil, fmt.Errorf("lkg: %s is corrupt: checksum mismatch", path)
	}
	var st State
	if err := json.Unmarshal(f.State, &st); err != nil {
		return nil, fmt.Errorf("lkg: %s is corrupt: %w", path, err)
	}
	if st.Service != service {
		return nil, fmt.Errorf("lkg: %s is the cache of service %q, not %q", path, st.Service, service)
	}
	if err := st.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("lkg: %s holds an invalid policy: %w", path, err)
	}
	return &st, nil
}
