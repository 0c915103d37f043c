package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// metrics are one round's measurements of a row, by name.
type metrics map[string]float64

// A row is one line of the table. measure runs one round of it for d (the
// section's duration); a row without measure is shown with its note (why it
// was skipped).
type row struct {
	name    string
	measure func(d time.Duration) (metrics, error)
	note    string
	ref     *row // the row its ratios are to; nil: the section's first row

	rounds []metrics
	err    error
}

// A column shows one metric of a row's medians, maybe against the
// reference row's.
type column struct {
	title string
	cell  func(m, ref metrics) string
}

// A section is a group of rows that share columns. Its first row is the
// bare one, the reference of the ratios. Each round measures each row for
// dur; warm, when set, is a first run of each row that is not counted.
type section struct {
	title   string
	columns []column
	dur     time.Duration
	warm    time.Duration
	rows    []*row
}

// add appends a row measured by measure and returns it (to use as a ref).
func (s *section) add(name string, measure func(d time.Duration) (metrics, error)) *row {
	r := &row{name: name, measure: measure}
	s.rows = append(s.rows, r)
	return r
}

// skip appends a row that is not measured, with the reason.
func (s *section) skip(name, note string) {
	s.rows = append(s.rows, &row{name: name, note: note})
}

// selectRows keeps the rows whose section title or name match re, with
// the rows their ratios are to, and the sections that keep a row.
func selectRows(sections []*section, re *regexp.Regexp) []*section {
	var out []*section
	for _, s := range sections {
		keep := map[*row]bool{}
		for _, r := range s.rows {
			if re.MatchString(s.title) || re.MatchString(r.name) {
				keep[r], keep[s.rows[0]] = true, true
				if r.ref != nil {
					keep[r.ref] = true
				}
			}
		}
		if len(keep) == 0 {
			continue
		}
		rows := s.rows[:0:0]
		for _, r := range s.rows {
			if keep[r] {
				rows = append(rows, r)
			}
		}
		s.rows = rows
		out = append(out, s)
	}
	return out
}

// runRounds measures every row of every section once per round, round
// robin, starting each round one row further so that no row always runs
// first: the load of the machine weighs on all rows alike.
func runRounds(sections []*section, rounds int, progress io.Writer) {
	type job struct {
		r *row
		d time.Duration
	}
	var all []job
	for _, s := range sections {
		for _, r := range s.rows {
			if r.measure == nil {
				continue
			}
			if s.warm > 0 {
				if _, err := r.measure(s.warm); err != nil {
					r.err = err
					continue
				}
			}
			all = append(all, job{r, s.dur})
		}
	}
	for round := range rounds {
		start := time.Now()
		for i := range all {
			j := all[(i+round)%len(all)]
			if j.r.err != nil {
				continue
			}
			runtime.GC() // the previous row's garbage is not this row's cost
			m, err := j.r.measure(j.d)
			if err != nil {
				j.r.err = err
				continue
			}
			j.r.rounds = append(j.r.rounds, m)
		}
		fmt.Fprintf(progress, "round %d/%d: %v\n", round+1, rounds, time.Since(start).Round(time.Millisecond))
	}
}

// medians returns, per metric, the median over the rounds of r.
func (r *row) medians() metrics {
	if len(r.rounds) == 0 {
		return nil
	}
	out := metrics{}
	for k := range r.rounds[0] {
		vs := make([]float64, 0, len(r.rounds))
		for _, m := range r.rounds {
			vs = append(vs, m[k])
		}
		slices.Sort(vs)
		n := len(vs)
		if n%2 == 1 {
			out[k] = vs[n/2]
		} else {
			out[k] = (vs[n/2-1] + vs[n/2]) / 2
		}
	}
	return out
}

// writeTable prints every section as part of one markdown table: each
// section opens with a bold row that names its columns.
func writeTable(w io.Writer, sections []*section) {
	width := 0
	for _, s := range sections {
		width = max(width, len(s.columns))
	}
	line := func(cells ...string) {
		for len(cells) < width+1 {
			cells = append(cells, "")
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	line("row")
	line(append([]string{"---"}, slices.Repeat([]string{"---:"}, width)...)...)
	for _, s := range sections {
		head := []string{"**" + s.title + "**"}
		for _, c := range s.columns {
			head = append(head, "*"+c.title+"*")
		}
		line(head...)
		for _, r := range s.rows {
			cells := []string{r.name}
			ref := s.rows[0]
			if r.ref != nil && r.ref != ref {
				ref = r.ref
				cells[0] += " (vs " + ref.name + ")"
			}
			switch m := r.medians(); {
			case r.measure == nil:
				cells = append(cells, "skipped: "+r.note)
			case r.err != nil:
				cells = append(cells, "error: "+strings.ReplaceAll(r.err.Error(), "|", "/"))
			default:
				for _, c := range s.columns {
					cells = append(cells, c.cell(m, ref.medians()))
				}
			}
			line(cells...)
		}
	}
}

// Column makers.

// value shows metric k with format f.
func value(title, k, f string) column {
	return column{title, func(m, _ metrics) string { return fmt.Sprintf(f, m[k]) }}
}

// ratio shows metric k as a multiple of the reference row's.
func ratio(title, k string) column {
	return column{title, func(m, ref metrics) string {
		if ref == nil || ref[k] == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2fx", m[k]/ref[k])
	}}
}

// added shows metric k minus the reference row's, with format f.
func added(title, k, f string) column {
	return column{title, func(m, ref metrics) string {
		if ref == nil {
			return "–"
		}
		return fmt.Sprintf("%+"+strings.TrimPrefix(f, "%"), m[k]-ref[k])
	}}
}

// Per-call measurement.

// perCall calls an op of newOp for about d from each of par goroutines and returns, per call,
// the CPU time of the process (client and server alike, plus extra: the CPU
// of other processes on the path, nil for none) in µs, the wall time (the
// run's duration over the calls, so for par > 1 the inverse of throughput)
// in µs, and the heap allocations of the process.
func perCall(d time.Duration, par int, newOp func() func() error, extra func() time.Duration) (metrics, error) {
	if extra == nil {
		extra = func() time.Duration { return 0 }
	}
	ops := make([]func() error, par) // one per goroutine: its own request
	for g := range ops {
		ops[g] = newOp()
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := processCPU() + extra()
	t0 := time.Now()
	deadline := t0.Add(d)
	var calls atomic.Int64
	errs := make([]error, par)
	var wg sync.WaitGroup
	for g, op := range ops {
		wg.Go(func() {
			n := int64(0)
			defer func() { calls.Add(n) }()
			for {
				if err := op(); err != nil {
					errs[g] = err
					return
				}
				n++
				// time.Now costs as much as a no-I/O call: look every 16.
				if n%16 == 0 && time.Now().After(deadline) {
					return
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(t0)
	cpu := processCPU() + extra() - cpu0
	runtime.ReadMemStats(&ms1)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	n := float64(calls.Load())
	return metrics{
		"cpu_us":  cpu.Seconds() * 1e6 / n,
		"wall_us": wall.Seconds() * 1e6 / n,
		"allocs":  float64(ms1.Mallocs-ms0.Mallocs) / n,
	}, nil
}

// processCPU returns the user and system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pidCPU returns the CPU time of process pid so far, all its threads: from
// the scheduler's nanosecond counters where the kernel keeps them, else
// from /proc/pid/stat in clock ticks (assumed 100 per second).
func pidCPU(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	ok := len(tasks) > 0
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			ok = false
			break
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			ok = false
			break
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			ok = false
			break
		}
		sum += time.Duration(ns)
	}
	if ok {
		return sum
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// cleanups runs functions in reverse order of registration, like
// testing.T.Cleanup.
type cleanups []func()

func (c *cleanups) add(f func()) { *c = append(*c, f) }

func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}
