package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// NewSnapshot validates doc, resolves every service and hashes the
// document. source describes where doc came from ("file:/abs/path",
// "inline", ...).
//
// The snapshot holds a deep copy of doc: the caller keeps doc and may change
// it afterwards without affecting the snapshot. An invalid doc gives a
// *ValidationError.
func NewSnapshot(doc *Document, source string) (*Snapshot, error) {
	if err := doc.Validate(); err != nil {
		return nil, err
	}
	doc = doc.Clone()
	hash, err := Hash(doc)
	if err != nil {
		return nil, err
	}
	return &Snapshot{
		Doc:      doc,
		Version:  cmp.Or(doc.Version, hash),
		Hash:     hash,
		Source:   source,
		Loaded:   time.Now(),
		Services: resolve(doc),
	}, nil
}

// Hash returns the content hash of doc: "sha256:" and the first 16 hex
// digits of the SHA-256 of its canonical JSON (encoding/json, map keys
// sorted). Documents that decode to the same values have the same hash,
// whether they were written in YAML or JSON, with comments or without.
func Hash(doc *Document) (string, error) {
	data, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("policy: hashing the document: %w", err)
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:8]), nil
}

// Service returns the resolved policy of the named service, or nil when the
// snapshot has no such service. s may be nil.
func (s *Snapshot) Service(name string) *ResolvedService {
	if s == nil {
		return nil
	}
	return s.Services[name]
}
