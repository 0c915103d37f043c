// Command bench measures what inmesh costs against the alternatives, in one
// run on this machine, and prints one markdown table.
//
//	cd bench && go run .          # about 9 minutes
//	cd bench && go run . -quick   # about four minutes
//
// (or `go -C bench run . -quick` from the repository's root: bench is a
// module of its own, so that users of inmesh do not inherit its
// dependencies.)
//
// Every row is measured once per round, round robin, so that the noise of
// the machine weighs on all rows alike; a cell is the median over the
// rounds, and a ratio compares two rows of the same run. Servers run on
// 127.0.0.1 in this process (HAProxy in its own): CPU and allocations per
// call are those of the whole path, client and server. bench/README.md
// says what each row measures.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"time"

	"github.com/inmesh/inmesh/identity"
)

// config are the settings of one run.
type config struct {
	rounds       int
	slice        time.Duration  // one round of a per-call row
	warm         time.Duration  // the uncounted first run of a per-call row
	outage       time.Duration  // one round of an outage row, failing
	recovery     time.Duration  // and then healed
	load         time.Duration  // one round of a capacity row
	destinations int            // of the memory row
	only         *regexp.Regexp // rows to measure; nil: all
}

func main() {
	quick := flag.Bool("quick", false, "fewer and shorter rounds: about four minutes")
	rounds := flag.Int("rounds", 0, "rounds (0: 8, or 5 with -quick)")
	only := flag.String("only", "", "measure only the rows whose section or name match this regexp (and their reference rows)")
	flag.Parse()
	cfg := config{rounds: 8, slice: time.Second, warm: 200 * time.Millisecond,
		outage: 2 * time.Second, recovery: 3 * time.Second, load: 4 * time.Second, destinations: 1000}
	if *quick {
		cfg = config{rounds: 5, slice: 200 * time.Millisecond, warm: 50 * time.Millisecond,
			outage: 500 * time.Millisecond, recovery: 1500 * time.Millisecond, load: time.Second, destinations: 1000}
	}
	if *rounds > 0 {
		cfg.rounds = *rounds
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -only:", err)
			os.Exit(2)
		}
		cfg.only = re
	}
	if err := run(cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run builds every scenario, measures them in cfg.rounds rounds and writes
// the table to out, progress to progress.
func run(cfg config, out, progress io.Writer) error {
	start := time.Now()
	ca, err := identity.NewDevCA(trustDomain)
	if err != nil {
		return err
	}
	e := &env{cfg: cfg, ca: ca}
	defer e.run()
	var sections []*section
	for _, build := range []func(*env) ([]*section, error){
		httpSections, grpcSections, noIOSections, overloadSections, tailSections, memorySections, faultSections,
	} {
		s, err := build(e)
		if err != nil {
			return err
		}
		sections = append(sections, s...)
	}
	if cfg.only != nil {
		sections = selectRows(sections, cfg.only)
	}
	runRounds(sections, cfg.rounds, progress)
	fmt.Fprintf(out, "%s, %s/%s, GOMAXPROCS=%d, %d CPUs; %d rounds, medians; %v\n\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.NumCPU(),
		cfg.rounds, time.Since(start).Round(time.Second))
	writeTable(out, sections)
	return nil
}
