package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
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

// parseFlags parses args where flags and positional arguments may mix.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// push validates a policy file and writes it to Consul KV, replacing the
// policy under the prefix: a key per service, the defaults and the global
// fields (egress, trust_domain), and the removal of the policy keys the
// file no longer has.
func push(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf consulFlags
	cf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprint(stderr, "usage: inmesh push FILE --consul ADDR [--prefix inmesh]\n")
		return 2
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
// JSON (which is also YAML) or written to -o FILE.
func get(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf consulFlags
	cf.register(fs)
	out := fs.String("o", "", "write the document to this file instead of stdout")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 0 {
		fmt.Fprint(stderr, "usage: inmesh get --consul ADDR [--prefix inmesh] [-o FILE]\n")
		return 2
	}
	client, err := cf.client()
	if err != nil {
		fmt.Fprintf(stderr, "inmesh get: %v\n", err)
		return 1
	}
	prefix := strings.TrimSuffix(cf.prefix, "/")
	pairs, _, err := client.KV().List(prefix+"/", nil)
	if err != nil {
		fmt.Fprintf(stderr, "inmesh get: reading %s/ from Consul: %v\n", prefix, err)
		return 1
	}
	kv := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		kv[p.Key] = p.Value
	}
	doc, err := consul.FromKeys(kv, prefix)
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
	if *out != "" {
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			fmt.Fprintf(stderr, "inmesh get: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s from %s/\n", *out, prefix)
		return 0
	}
	_, _ = stdout.Write(data)
	return 0
}
