package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"
	"go.yaml.in/yaml/v3"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/policy"
)

// maxTxnOps is the most operations Consul takes in one transaction.
const maxTxnOps = 64

// consulFlags are the flags push and get share.
type consulFlags struct {
	addr, prefix, token string
}

func (f *consulFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "consul", "", "Consul HTTP address, host:port (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	fs.StringVar(&f.prefix, "prefix", consul.DefaultPrefix, "KV prefix of the policy")
	fs.StringVar(&f.token, "token", "", "Consul ACL token (default $CONSUL_HTTP_TOKEN)")
}

func (f *consulFlags) client() (*api.Client, error) {
	cfg := api.DefaultConfig()
	if f.addr != "" {
		cfg.Address = f.addr
	}
	if f.token != "" {
		cfg.Token = f.token
	}
	return api.NewClient(cfg)
}

// read reads the policy under the prefix back into one document.
func (f *consulFlags) read() (*policy.Document, error) {
	client, err := f.client()
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimSuffix(f.prefix, "/")
	pairs, _, err := client.KV().List(prefix+"/", nil)
	if err != nil {
		return nil, fmt.Errorf("reading %s/ from Consul: %w", prefix, err)
	}
	kv := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		kv[p.Key] = p.Value
	}
	return consul.FromKeys(kv, prefix)
}

// push validates a policy file and writes it to Consul KV, replacing the
// policy under the prefix: a key per service, the defaults and the global
// fields (egress, trust_domain), and the removal of the policy keys the
// file no longer has.
func push(args []string, stdout, stderr io.Writer) int {
	c := newCommand("push", `inmesh push FILE [--consul ADDR] [--prefix inmesh] [--token TOKEN]

Validates a policy file and writes it to Consul KV in one transaction: a
key per service, the defaults, and <prefix>/mesh for egress and
trust_domain; the policy keys the file no longer has are removed.`, stderr)
	var cf consulFlags
	cf.register(c.fs)
	pos, code, done := c.parse(args, stdout, stderr)
	if done {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(stderr)
	}
	snap, err := load(pos[0])
	if err != nil {
		printProblems(stderr, pos[0], err)
		return 1
	}
	keys, err := consul.Keys(snap.Doc, cf.prefix)
	if err != nil {
		fmt.Fprintf(stderr, "inmesh push: %v\n", err)
		return 1
	}
	client, err := cf.client()
	if err != nil {
		fmt.Fprintf(stderr, "inmesh push: %v\n", err)
		return 1
	}
	prefix := strings.TrimSuffix(cf.prefix, "/")
	existing, _, err := client.KV().Keys(prefix+"/", "", nil)
	if err != nil {
		fmt.Fprintf(stderr, "inmesh push: reading %s/ from Consul: %v\n", prefix, err)
		return 1
	}
	var ops api.KVTxnOps
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: k, Value: keys[k]})
	}
	var removed []string
	for _, k := range existing {
		// Every key under services/ goes, also one that names no service
		// (which no mesh reads).
		if _, keep := keys[k]; !keep && (consul.IsPolicyKey(k, prefix) || strings.HasPrefix(k, prefix+"/services/")) {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVDelete, Key: k})
			removed = append(removed, k)
		}
	}
	// One transaction when it fits, so watchers see the whole document at
	// once; Consul caps a transaction at 64 operations.
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		ok, resp, _, err := client.KV().Txn(ops[:n], nil)
		if err != nil {
			fmt.Fprintf(stderr, "inmesh push: writing to Consul: %v\n", err)
			return 1
		}
		if !ok {
			var msgs []string
			for _, e := range resp.Errors {
				msgs = append(msgs, e.What)
			}
			fmt.Fprintf(stderr, "inmesh push: Consul refused the transaction: %s\n", strings.Join(msgs, "; "))
			return 1
		}
		ops = ops[n:]
	}
	fmt.Fprintf(stdout, "pushed %s to %s/: %d keys written, %d removed, version %s\n", pos[0], prefix, len(keys), len(removed), snap.Hash)
	return 0
}

// get reads the policy under the prefix back into one document, printed as
// JSON (which is also YAML; -o json, the default), as YAML (-o text), or
// written as JSON to --file FILE.
func get(args []string, stdout, stderr io.Writer) int {
	c := newCommand("get", `inmesh get [--consul ADDR] [--prefix inmesh] [--token TOKEN] [-o json|text] [--file FILE]

Reads the policy under the prefix back from Consul KV into one document,
printed as JSON (-o json, the default: JSON is also YAML, so 'inmesh
validate' and the mesh read it back), as YAML (-o text), or written as
JSON to FILE. For compatibility, -o with a value other than json, text or
yaml names the file to write.`, stderr)
	var cf consulFlags
	cf.register(c.fs)
	var out, file string
	c.fs.StringVar(&out, "o", "json", "output format: json or text (YAML); any other value is a file to write, as --file")
	c.fs.StringVar(&file, "file", "", "write the document as JSON to this file instead of stdout")
	pos, code, done := c.parse(args, stdout, stderr)
	if done {
		return code
	}
	if len(pos) != 0 {
		return c.usageError(stderr)
	}
	switch out {
	case "json", "text", "yaml":
	default: // the spelling of the file before -o took formats
		if file != "" {
			fmt.Fprintf(stderr, "inmesh get: -o %q and --file %q: give the file once\n", out, file)
			return 2
		}
		file, out = out, "json"
	}
	prefix := strings.TrimSuffix(cf.prefix, "/")
	doc, err := cf.read()
	if err != nil {
		fmt.Fprintf(stderr, "inmesh get: %v\n", err)
		return 1
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "inmesh get: %v\n", err)
		return 1
	}
	data = append(data, '\n')
	if file != "" {
		if err := os.WriteFile(file, data, 0o644); err != nil {
			fmt.Fprintf(stderr, "inmesh get: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s from %s/\n", file, prefix)
		return 0
	}
	if out != "json" {
		if data, err = jsonToYAML(data); err != nil {
			fmt.Fprintf(stderr, "inmesh get: %v\n", err)
			return 1
		}
	}
	_, _ = stdout.Write(data)
	return 0
}

// jsonToYAML renders a JSON document as block YAML, keeping its key order.
func jsonToYAML(data []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, err
	}
	clearStyle(&n)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}

// clearStyle turns the flow style of JSON into YAML's block style, and
// drops quotes that YAML does not need.
func clearStyle(n *yaml.Node) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		n.Style = 0
	} else if n.Style == yaml.DoubleQuotedStyle {
		n.Style = 0 // the encoder quotes what would not read back as a string
	}
	for _, c := range n.Content {
		clearStyle(c)
	}
}
