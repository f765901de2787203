// Command lateness measures how late Go's context deadlines are seen: the
// time from a context.WithTimeout deadline (1-3 ms ahead) to the moment the
// goroutine waiting for it runs again. It is the Go side of cancelctx's
// benches/latency.rs, which builds and runs it (unless `go` is missing) so
// both appear in one table.
//
// Scenarios (-scenario, default all three):
//
//	idle  <-ctx.Done() on an otherwise idle process
//	busy  <-ctx.Done() with 2×GOMAXPROCS goroutines spinning (busy loops)
//	spin  every P runs a goroutine spinning on ctx.Err() of the deadline
//	      context itself; the sample is the time until the last spinner sees
//	      the error (capped at 50 ms, reported as +Inf)
//
//	cd benches/go && GOFLAGS=-mod=mod go run .             # 400 samples per row
//	cd benches/go && GOFLAGS=-mod=mod go run . -quick      # 40
//	go run . -scenario busy -n 300 -raw                    # what latency.rs runs
//
// With -raw, each row is also printed as one tab-separated line
// "ROW<TAB>scenario<TAB>name<TAB>s1,s2,..." (µs, sorted; "Inf" = capped).
//
// Standard library only; no network needed.
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// spinCap bounds one sample of the spin scenario.
const spinCap = 50 * time.Millisecond

// rng is a tiny xorshift64* generator: deadlines spread over 1-3 ms.
type rng uint64

func (r *rng) next() uint64 {
	x := uint64(*r)
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*r = rng(x)
	return x * 0x2545F4914F6CDD1D
}

func (r *rng) timeout() time.Duration {
	return time.Duration(1000+r.next()%2000) * time.Microsecond
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// waitDone waits for one context deadline in <-ctx.Done() and returns the
// lateness in µs.
func waitDone(timeout time.Duration) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	<-ctx.Done()
	return micros(time.Since(deadline))
}

// spinErr starts one goroutine per P, each spinning on ctx.Err() of a
// context with a deadline, and returns the time from the deadline until the
// last of them saw the error (µs), or +Inf if one had not after spinCap.
func spinErr(timeout time.Duration) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	procs := runtime.GOMAXPROCS(0)
	late := make([]float64, procs)
	var wg sync.WaitGroup
	for i := 0; i < procs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for ctx.Err() == nil {
				if time.Since(deadline) > spinCap {
					late[i] = math.Inf(1)
					return
				}
			}
			late[i] = micros(time.Since(deadline))
		}(i)
	}
	wg.Wait()
	return latest(late)
}

// latest is the lateness of the last spinner to see the deadline: the
// largest of late, negative if every spinner saw it early (not clipped to 0).
func latest(late []float64) float64 {
	worst := math.Inf(-1)
	for _, l := range late {
		worst = math.Max(worst, l)
	}
	return worst
}

func measure(n int, sample func(time.Duration) float64) []float64 {
	r := rng(uint64(time.Now().UnixNano()) | 1)
	for i := 0; i < 10; i++ { // warm-up, unrecorded
		sample(r.timeout())
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = sample(r.timeout())
	}
	sort.Float64s(out)
	return out
}

// pct is the nearest-rank percentile of sorted xs.
func pct(xs []float64, p float64) float64 {
	rank := int(math.Ceil(p / 100 * float64(len(xs))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(xs) {
		rank = len(xs)
	}
	return xs[rank-1]
}

// spin starts count goroutines running work until the returned stop is called.
func spin(count int, work func()) (stop func()) {
	var done atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < count; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				work()
			}
		}()
	}
	return func() { done.Store(true); wg.Wait() }
}

var sink atomic.Uint64

type row struct {
	scenario, name string
	samples        []float64
}

func run(scenario string, n int) row {
	procs := runtime.GOMAXPROCS(0)
	switch scenario {
	case "idle":
		return row{scenario, "Go <-ctx.Done()", measure(n, waitDone)}
	case "busy":
		stop := spin(2*procs, func() {
			x := sink.Load()
			for i := 0; i < 1000; i++ {
				x = x*31 + 7
			}
			sink.Store(x)
		})
		defer stop()
		return row{scenario, fmt.Sprintf("Go <-ctx.Done(), %d busy goroutines", 2*procs), measure(n, waitDone)}
	case "spin":
		return row{scenario, fmt.Sprintf("Go ctx.Err() seen by %d spinning goroutines", procs), measure(n, spinErr)}
	}
	fmt.Fprintf(os.Stderr, "unknown scenario %q (idle, busy, spin)\n", scenario)
	os.Exit(2)
	return row{}
}

func main() {
	quick := flag.Bool("quick", false, "40 samples per row instead of 400")
	samples := flag.Int("n", 0, "samples per row (overrides -quick)")
	scenarios := flag.String("scenario", "idle,busy,spin", "comma-separated scenarios to run")
	raw := flag.Bool("raw", false, "also print every row's sorted samples (for latency.rs)")
	flag.Parse()
	n := 400
	if *quick {
		n = 40
	}
	if *samples > 0 {
		n = *samples
	}
	start := time.Now()

	var rows []row
	for _, s := range strings.Split(*scenarios, ",") {
		rows = append(rows, run(strings.TrimSpace(s), n))
	}

	fmt.Printf("wake-up lateness after a deadline 1-3 ms ahead, µs (%d samples per row, GOMAXPROCS=%d, %s)\n",
		n, runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Printf("%-44s %9s %9s %9s %9s\n", "waiter", "p50", "p90", "p99", "max")
	for _, r := range rows {
		s := r.samples
		fmt.Printf("%-44s %9.1f %9.1f %9.1f %9.1f\n", r.name, pct(s, 50), pct(s, 90), pct(s, 99), s[len(s)-1])
	}
	fmt.Printf("elapsed: %.1f s\n", time.Since(start).Seconds())
	if *raw {
		for _, r := range rows {
			cells := make([]string, len(r.samples))
			for i, v := range r.samples {
				cells[i] = strconv.FormatFloat(v, 'f', 1, 64)
			}
			fmt.Printf("ROW\t%s\t%s\t%s\n", r.scenario, r.name, strings.Join(cells, ","))
		}
	}
}
