package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/inmesh/inmesh/policy"
)

// diffResult is what diff -o json prints: the fields of the whole policy
// that change, then the services that change, by name.
type diffResult struct {
	A        diffSide      `json:"a"`
	B        diffSide      `json:"b"`
	Equal    bool          `json:"equal"`
	Fields   []fieldChange `json:"fields"`   // version, trust_domain, egress
	Services []serviceDiff `json:"services"` // only the services that change
}

// diffSide names one of the two documents.
type diffSide struct {
	File    string `json:"file"`
	Version string `json:"version"`
	Hash    string `json:"hash"`
}

// serviceDiff is one service that changes: added, removed, or changed in
// the fields listed.
type serviceDiff struct {
	Name   string        `json:"name"`
	Change string        `json:"change"` // added, removed or changed
	Fields []fieldChange `json:"fields,omitempty"`
}

// fieldChange is one field of the resolved view that changes, at a path
// such as "effective.timeout" or "routes[charge].split[1].weight". Old is
// left out where the field is new, New where it is gone.
type fieldChange struct {
	Path string `json:"path"`
	Old  any    `json:"old,omitempty"`
	New  any    `json:"new,omitempty"`
}

// diff prints what would change between two policy documents.
func diff(args []string, stdout, stderr io.Writer) int {
	c := newCommand("diff", `inmesh diff [-o text|json] [--consul ADDR] [--prefix inmesh] A B

Says what would change if policy B replaced policy A: the top-level fields
(version, trust_domain, egress), then service by service and field by field
on the resolved view, the one a mesh runs on (effective settings after the
defaults, routes, endpoints, subsets, authorization and protections). A
change of the defaults shows in the services it reaches. Only the services
that change are listed. Exits 0 when the two are the same, 1 when they
differ, 2 on error, like diff(1).

A and B are policy files, or consul: for the policy in Consul KV under
--prefix at --consul (consul:ADDR names the address), as 'inmesh get'
reads it: 'inmesh diff consul: new.yaml' says what 'inmesh push new.yaml'
would change. The version label stays out of KV: there the version is the
content hash.`, stderr)
	var cf consulFlags
	cf.register(c.fs)
	out := c.outputFlag()
	pos, code, done := c.parse(args, stdout, stderr)
	if done {
		return code
	}
	if len(pos) != 2 {
		return c.usageError(stderr)
	}
	var snaps [2]*policy.Snapshot
	for i, p := range pos {
		s, err := loadSource(p, cf)
		if err != nil {
			printProblems(stderr, p, err)
			return 2
		}
		snaps[i] = s
	}
	res := diffSnapshots(snaps[0], snaps[1])
	res.A = diffSide{File: pos[0], Version: snaps[0].Version, Hash: snaps[0].Hash}
	res.B = diffSide{File: pos[1], Version: snaps[1].Version, Hash: snaps[1].Hash}
	if *out == "json" {
		writeJSON(stdout, res)
	} else {
		printDiff(stdout, res)
	}
	if res.Equal {
		return 0
	}
	return 1
}

// loadSource loads a policy file, or with "consul:" or "consul:ADDR" the
// policy in Consul KV under cf's prefix.
func loadSource(src string, cf consulFlags) (*policy.Snapshot, error) {
	addr, ok := strings.CutPrefix(src, "consul:")
	if !ok {
		return load(src)
	}
	if addr != "" {
		cf.addr = addr
	}
	doc, err := cf.read()
	if err != nil {
		return nil, err
	}
	return policy.NewSnapshot(doc, src)
}

// diffSnapshots compares the resolved views of a and b.
func diffSnapshots(a, b *policy.Snapshot) diffResult {
	res := diffResult{Fields: []fieldChange{}, Services: []serviceDiff{}}
	top := func(s *policy.Snapshot) *object {
		egress := s.Doc.Egress
		if egress == "" {
			egress = policy.EgressAllow
		}
		o := &object{}
		o.set("version", s.Version)
		o.set("trust_domain", s.Doc.TrustDomain)
		o.set("egress", egress)
		return o
	}
	res.Fields = diffTree(res.Fields, "", top(a), top(b))
	names := slices.Sorted(maps.Keys(a.Services))
	for n := range b.Services {
		if a.Services[n] == nil {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		sa, sb := a.Services[n], b.Services[n]
		switch {
		case sb == nil:
			res.Services = append(res.Services, serviceDiff{Name: n, Change: "removed"})
		case sa == nil:
			res.Services = append(res.Services, serviceDiff{Name: n, Change: "added"})
		default:
			if fs := diffTree(nil, "", serviceView(sa), serviceView(sb)); len(fs) > 0 {
				res.Services = append(res.Services, serviceDiff{Name: n, Change: "changed", Fields: fs})
			}
		}
	}
	res.Equal = len(res.Fields) == 0 && len(res.Services) == 0
	return res
}

// serviceView is the resolved service s as a tree to compare: endpoints
// keyed by address, routes by name (with their position), and the implicit
// route of a service without routes left out, since its settings are the
// service's own.
func serviceView(s *policy.ResolvedService) *object {
	o := normalize(reflect.ValueOf(*s)).(*object)
	o.del("name")
	eps := &object{keyed: true}
	for _, e := range s.Endpoints {
		eps.set(e.Address, normalize(reflect.ValueOf(e)))
	}
	o.replace("endpoints", eps)
	if !s.HasRoutes {
		o.del("routes")
		return o
	}
	routes := &object{keyed: true}
	for i, r := range s.Routes {
		ro := normalize(reflect.ValueOf(r)).(*object)
		ro.del("name")
		ro.set("index", i)
		key := r.Name
		if _, dup := routes.vals[key]; dup || key == "" {
			key = fmt.Sprintf("%s#%d", r.Name, i)
		}
		routes.set(key, ro)
	}
	o.replace("routes", routes)
	return o
}

// object is a JSON-like object that keeps the order of its keys: a struct's
// fields in declaration order, a map's keys sorted. A keyed object stands
// for a list identified by a key (endpoints by address, routes by name):
// its keys show in paths as [key].
type object struct {
	keys  []string
	vals  map[string]any
	keyed bool
}

func (o *object) set(k string, v any) {
	if o.vals == nil {
		o.vals = map[string]any{}
	}
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *object) replace(k string, v any) {
	if _, ok := o.vals[k]; ok {
		o.vals[k] = v
	}
}

func (o *object) del(k string) {
	if _, ok := o.vals[k]; ok {
		delete(o.vals, k)
		o.keys = slices.DeleteFunc(o.keys, func(s string) bool { return s == k })
	}
}

// MarshalJSON writes o with its keys in order.
func (o *object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kj, _ := json.Marshal(k)
		vj, err := json.Marshal(o.vals[k])
		if err != nil {
			return nil, err
		}
		b.Write(kj)
		b.WriteByte(':')
		b.Write(vj)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

var (
	durationType       = reflect.TypeFor[time.Duration]()
	policyDurationType = reflect.TypeFor[policy.Duration]()
)

// normalize turns v into a tree of *object, []any and scalars, with the
// JSON names of the fields (snake case for fields without one), durations
// as strings such as "250ms", and nil for an absent pointer or an empty
// list or map.
func normalize(v reflect.Value) any {
	if !v.IsValid() {
		return nil
	}
	switch v.Type() {
	case durationType:
		return time.Duration(v.Int()).String()
	case policyDurationType:
		return policy.Duration(v.Int()).String()
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return normalize(v.Elem())
	case reflect.Struct:
		o := &object{}
		addFields(o, v)
		return o
	case reflect.Map:
		if v.Len() == 0 {
			return nil
		}
		o := &object{}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		for _, k := range keys {
			o.set(fmt.Sprint(k), normalize(v.MapIndex(k)))
		}
		return o
	case reflect.Slice, reflect.Array:
		if v.Len() == 0 {
			return nil
		}
		l := make([]any, v.Len())
		for i := range l {
			l[i] = normalize(v.Index(i))
		}
		return l
	default:
		return v.Interface()
	}
}

// addFields adds the exported fields of struct v to o, the fields of an
// embedded struct without a JSON name inline.
func addFields(o *object, v reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			addFields(o, v.Field(i))
			continue
		}
		if name == "" {
			name = snake(f.Name)
		}
		o.set(name, normalize(v.Field(i)))
	}
}

// snake turns a Go field name such as PerTryTimeout into per_try_timeout
// (and TLS into tls).
func snake(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		if unicode.IsUpper(c) {
			if i > 0 && (unicode.IsLower(r[i-1]) || (i+1 < len(r) && unicode.IsLower(r[i+1]))) {
				b.WriteByte('_')
			}
			c = unicode.ToLower(c)
		}
		b.WriteRune(c)
	}
	return b.String()
}

// absent marks a key one side of a comparison lacks.
type absentValue struct{}

var absent any = absentValue{}

// diffTree lists the changes from a to b below path: objects key by key,
// lists of objects item by item, anything else as a whole.
func diffTree(out []fieldChange, path string, a, b any) []fieldChange {
	oa, aObj := a.(*object)
	ob, bObj := b.(*object)
	if aObj && bObj && oa.keyed == ob.keyed {
		keys := slices.Clone(oa.keys)
		for _, k := range ob.keys {
			if _, ok := oa.vals[k]; !ok {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			va, ok := oa.vals[k]
			if !ok {
				va = absent
			}
			vb, ok := ob.vals[k]
			if !ok {
				vb = absent
			}
			p := path + "." + k
			if oa.keyed {
				p = path + "[" + k + "]"
			} else if path == "" {
				p = k
			}
			out = diffTree(out, p, va, vb)
		}
		return out
	}
	la, aList := a.([]any)
	lb, bList := b.([]any)
	if aList && bList && (hasObject(la) || hasObject(lb)) {
		for i := range max(len(la), len(lb)) {
			va, vb := absent, absent
			if i < len(la) {
				va = la[i]
			}
			if i < len(lb) {
				vb = lb[i]
			}
			out = diffTree(out, fmt.Sprintf("%s[%d]", path, i), va, vb)
		}
		return out
	}
	if reflect.DeepEqual(a, b) {
		return out
	}
	fc := fieldChange{Path: path}
	if a != absent {
		fc.Old = a
	}
	if b != absent {
		fc.New = b
	}
	return append(out, fc)
}

func hasObject(l []any) bool {
	for _, v := range l {
		if _, ok := v.(*object); ok {
			return true
		}
	}
	return false
}

// printDiff writes the changes for a person: a line per top-level field,
// then per service "+ name" (added), "- name" (removed) or "~ name"
// (changed) and its fields, indented, as "path: old → new".
func printDiff(w io.Writer, res diffResult) {
	if res.Equal {
		fmt.Fprintf(w, "%s and %s resolve to the same policy: no change\n", res.A.File, res.B.File)
		return
	}
	for _, f := range res.Fields {
		fmt.Fprintf(w, "%s: %s → %s\n", f.Path, showValue(f.Old), showValue(f.New))
	}
	var added, removed, changed int
	for _, s := range res.Services {
		switch s.Change {
		case "added":
			added++
			fmt.Fprintf(w, "+ %s (added)\n", s.Name)
		case "removed":
			removed++
			fmt.Fprintf(w, "- %s (removed)\n", s.Name)
		default:
			changed++
			fmt.Fprintf(w, "~ %s\n", s.Name)
			for _, f := range s.Fields {
				fmt.Fprintf(w, "    %s: %s → %s\n", f.Path, showValue(f.Old), showValue(f.New))
			}
		}
	}
	fmt.Fprintf(w, "%d services change: %d changed, %d added, %d removed\n", len(res.Services), changed, added, removed)
}

// showValue renders one side of a change: "(none)" for a field that is
// absent, a string as it is, anything else as compact JSON.
func showValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "(none)"
	case string:
		if v == "" {
			return `""`
		}
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
