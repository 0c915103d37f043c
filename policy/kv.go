package policy

import (
	"maps"
	"slices"
	"strings"
)

// ParseService reads one service block, YAML or JSON, as a Consul KV key
// holds it, reporting problems under path ("services.billing" or
// "defaults"). It checks the block's own fields; rules that involve the
// defaults are checked when the block joins a document.
func ParseService(data []byte, path string) (*Service, error) {
	svc := new(Service)
	zeros, err := decodeInto(data, svc, path)
	if err != nil {
		return nil, err
	}
	v := validator{zeros: zeros}
	v.service(path, svc)
	if len(v.problems) > 0 {
		return nil, &ValidationError{Problems: capped(v.problems, v.dropped)}
	}
	return svc, nil
}

// Global holds the fields of a document that belong to no service block:
// what a control plane that keeps the policy as separate blocks (Consul KV:
// the key <prefix>/mesh) keeps beside the defaults and the services. The
// version is not among them: such a policy is versioned by its content
// hash.
type Global struct {
	// TrustDomain is Document.TrustDomain.
	TrustDomain string `json:"trust_domain,omitempty"`
	// Egress is Document.Egress.
	Egress string `json:"egress,omitempty"`
}

// ParseGlobal reads the global block, YAML or JSON, and checks its fields,
// reporting problems under their document paths ("egress").
func ParseGlobal(data []byte) (*Global, error) {
	g := new(Global)
	if _, err := decodeInto(data, g, ""); err != nil {
		return nil, err
	}
	v := validator{}
	v.document(&Document{TrustDomain: g.TrustDomain, Egress: g.Egress})
	if len(v.problems) > 0 {
		return nil, &ValidationError{Problems: capped(v.problems, v.dropped)}
	}
	return g, nil
}

// GlobalOf returns the global block of doc, nil when doc sets none of its
// fields.
func GlobalOf(doc *Document) *Global {
	if doc == nil || doc.TrustDomain == "" && doc.Egress == "" {
		return nil
	}
	return &Global{TrustDomain: doc.TrustDomain, Egress: doc.Egress}
}

// ServicePath is the path of the block of service name in a document and
// in the problems of Assemble: "services.billing", `services["a.b"]`.
func ServicePath(name string) string { return join("services", name) }

// Blocks is a policy kept as separate blocks, as Consul KV keeps it: the
// global fields, the defaults and one block per service. Assemble joins
// them into a Document, dropping the blocks that do not validate together
// with the others, so that one bad key never takes the good ones down with
// it.
type Blocks struct {
	Global   *Global // nil: none of its fields set
	Defaults *Service
	Services map[string]*Service
}

// Assemble returns the document of b, or, when it does not validate, the
// document of b with every offending block replaced by its version in prev
// (or removed when prev has none), and the problems of the blocks it
// replaced, by block path ("defaults", "services.billing"). prev must
// validate (nil means no previous document). Assemble does not modify b or
// prev.
func (b Blocks) Assemble(prev *Document) (*Document, map[string]error) {
	doc := &Document{Defaults: b.Defaults, Services: maps.Clone(b.Services)}
	if b.Global != nil {
		doc.TrustDomain, doc.Egress = b.Global.TrustDomain, b.Global.Egress
	}
	if doc.Services == nil {
		doc.Services = map[string]*Service{}
	}
	rejected := map[string]error{}
	// Each round reverts at least one block, so this ends.
	for round := range len(doc.Services) + 2 {
		var err error
		if round == 0 && prev != nil {
			// prev validates: its blocks that doc holds need no check
			// of their own.
			err = doc.validateOn(prev.Defaults, prev.Services)
		} else {
			err = doc.Validate()
		}
		if err == nil {
			return doc, rejected
		}
		ve, _ := err.(*ValidationError)
		culprits := map[string][]FieldError{}
		if ve != nil {
			for _, p := range ve.Problems {
				b := blockOf(doc, p.Path)
				culprits[b] = append(culprits[b], p)
			}
		}
		reverted := false
		for _, block := range slices.Sorted(maps.Keys(culprits)) {
			if block == "" || rejected[block] != nil {
				continue
			}
			rejected[block] = &ValidationError{Problems: culprits[block]}
			revert(doc, prev, block)
			reverted = true
		}
		if !reverted {
			break
		}
	}
	if prev == nil {
		return nil, rejected
	}
	return prev, rejected
}

// blockOf returns the block a problem path belongs to: "defaults", the
// path of a service of doc ("services.billing", `services["a.b"]`), or "".
func blockOf(doc *Document, path string) string {
	under := func(block string) bool {
		return path == block || strings.HasPrefix(path, block+".") || strings.HasPrefix(path, block+"[")
	}
	if under("defaults") {
		return "defaults"
	}
	for name := range doc.Services {
		if b := join("services", name); under(b) {
			return b
		}
	}
	return ""
}

// revert puts back prev's version of block in doc (or removes it).
func revert(doc, prev *Document, block string) {
	if block == "defaults" {
		doc.Defaults = nil
		if prev != nil {
			doc.Defaults = prev.Defaults
		}
		return
	}
	for name := range doc.Services {
		if join("services", name) != block {
			continue
		}
		delete(doc.Services, name)
		if prev != nil && prev.Services[name] != nil {
			doc.Services[name] = prev.Services[name]
		}
		return
	}
}
