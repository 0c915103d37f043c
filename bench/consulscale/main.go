// Command consulscale measures what a fleet of meshes costs one Consul
// agent, so that users can size their agents: N meshes in this process,
// each a caller service of its own with its own Consul client (as N
// processes on one host would have), each calling one destination, on one
// agent. For each N it prints one row:
//
//   - propagation: from a KV write of the destination's policy block to
//     the moment the last of the N meshes applied it, p50 / p99 over the
//     writes;
//
//   - the agent's CPU during those writes (of one core);
//
//   - this process's CPU per mesh for a write of an unrelated key (the
//     block of a service none of them calls);
//
//   - idle load: the requests per second the N meshes make of the agent
//     when nothing changes;
//
//   - per mesh: connections to the agent, goroutines (and how many of them
//     are net/http's read and write loops of those connections) and heap.
//
// The destination runs in a process of its own, as in production: its
// server's share of each caller's connection is not counted as the
// callers'.
//
//	go -C bench run ./consulscale                    # 50, 200, 500 meshes
//	go -C bench run ./consulscale -meshes 50,1000 -writes 50
//	go -C bench run ./consulscale -agent 127.0.0.1:8500  # an agent of yours
//
// Without -agent it starts a dev agent (the consul binary of
// $INMESH_CONSUL, PATH or scripts/install-consul.sh's cache) with
// http_max_conns_per_client raised, so that the connections a fleet needs
// are measured rather than refused; the README says what to set it to.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	meshes := flag.String("meshes", "50,200,500", "comma-separated fleet sizes, one row each")
	writes := flag.Int("writes", 30, "KV writes measured per row")
	agentAddr := flag.String("agent", "", "the HTTP address of an agent to use (default: start a dev agent)")
	bin := flag.String("consul", "", "the consul binary (default: $INMESH_CONSUL, PATH, or the install script's cache)")
	idle := flag.Duration("idle", 5*time.Second, "how long the idle load is counted")
	flag.BoolVar(&useHTTPS, "https", false, "start the dev agent with its API on HTTPS only (a CA of its own): the clients speak HTTP/2, one connection each")
	flag.IntVar(&otherKeys, "keys", 0, "the policy blocks of `N` other services under the prefix (each KV answer holds them all)")
	flag.BoolVar(&register, "register", false, "register every caller in the catalog, as a production workload is (a TCP check; the mesh reports its policy status to KV after each policy it applies)")
	flag.StringVar(&heapProfile, "memprofile", "", "write a heap profile of the last row's fleet, once it settled, to `FILE`")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the last row's unrelated writes to `FILE`")
	flag.StringVar(&goroutineProfile, "goroutines", "", "write the goroutines of the last row's settled fleet to `FILE`")
	flag.StringVar(&destFlags.name, "destination", "", "(internal) serve as the destination `SERVICE` on -agent, until stdin ends")
	flag.StringVar(&destFlags.prefix, "prefix", "", "(internal) the destination's KV prefix")
	flag.StringVar(&destFlags.agentCA, "agent-ca", "", "(internal) the CA `FILE` of the destination's HTTPS agent")
	flag.Parse()
	if destFlags.name != "" {
		if err := serveDestination(*agentAddr); err != nil {
			fmt.Fprintln(os.Stderr, "consulscale -destination:", err)
			os.Exit(1)
		}
		return
	}
	if heapProfile != "" {
		runtime.MemProfileRate = 512 // fine enough to tell 60 KiB per mesh apart
	}
	var sizes []int
	for _, f := range strings.Split(*meshes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "consulscale: -meshes: %q is no fleet size\n", f)
			os.Exit(2)
		}
		sizes = append(sizes, n)
	}
	if err := run(sizes, *writes, *idle, *agentAddr, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "consulscale:", err)
		os.Exit(1)
	}
}

// useHTTPS starts the agent with its API on HTTPS only.
var useHTTPS bool

// register registers the callers.
var register bool

// otherKeys is the number of other services' blocks under the prefix.
var otherKeys int

// heapProfile, cpuProfile and goroutineProfile are where measure writes
// the fleet's heap profile, the CPU profile of the unrelated writes and
// the fleet's goroutines; "": none.
var heapProfile, cpuProfile, goroutineProfile string

func run(sizes []int, writes int, idle time.Duration, agentAddr, bin string) error {
	ag, err := openAgent(agentAddr, bin)
	if err != nil {
		return err
	}
	defer ag.stop()
	fmt.Printf("Consul %s at %s; %d writes per row; idle load counted over %v\n\n", ag.version, ag.addr, writes, idle)
	fmt.Println("| meshes on one agent | last mesh applied a KV write: p50 / p99 | agent CPU during writes | process CPU per mesh per unrelated write | idle requests/s | per mesh: connections, goroutines, heap |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, n := range sizes {
		r, err := measure(ag, n, writes, idle)
		if err != nil {
			return fmt.Errorf("%d meshes: %w", n, err)
		}
		fmt.Println(r.row())
	}
	return nil
}
