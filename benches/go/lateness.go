// Command lateness measures how late Go's context deadlines wake a waiter:
// the time from a context.WithTimeout deadline (1-3 ms ahead) to the moment
// the goroutine blocked in <-ctx.Done() runs again. It is the Go side of
// cancelctx's benches/latency.rs.
//
// Scenarios: idle; 2×GOMAXPROCS goroutines spinning (busy loops, no calls);
// GOMAXPROCS goroutines spinning on ctx.Err() of a live context.
//
//	cd benches/go && GOFLAGS=-mod=mod go run .          # 400 samples per row
//	cd benches/go && GOFLAGS=-mod=mod go run . -quick   # 40
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
	"sync"
	"sync/atomic"
	"time"
)

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

// sample waits for one context deadline and returns the lateness in µs.
func sample(timeout time.Duration) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	<-ctx.Done()
	return float64(time.Since(deadline).Nanoseconds()) / 1e3
}

func measure(n int) []float64 {
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

func main() {
	quick := flag.Bool("quick", false, "40 samples per row instead of 400")
	flag.Parse()
	n := 400
	if *quick {
		n = 40
	}
	procs := runtime.GOMAXPROCS(0)
	start := time.Now()

	type row struct {
		name    string
		samples []float64
	}
	var rows []row

	rows = append(rows, row{"go <-ctx.Done(), idle", measure(n)})

	stop := spin(2*procs, func() {
		x := sink.Load()
		for i := 0; i < 1000; i++ {
			x = x*31 + 7
		}
		sink.Store(x)
	})
	rows = append(rows, row{fmt.Sprintf("go <-ctx.Done(), %d busy goroutines", 2*procs), measure(n)})
	stop()

	live, cancelLive := context.WithCancel(context.Background())
	stop = spin(procs, func() {
		if live.Err() != nil {
			panic("live context ended")
		}
	})
	rows = append(rows, row{fmt.Sprintf("go <-ctx.Done(), %d goroutines spinning on ctx.Err()", procs), measure(n)})
	stop()
	cancelLive()

	fmt.Printf("wake-up lateness after a deadline 1-3 ms ahead, µs (%d samples per row, GOMAXPROCS=%d, %s)\n",
		n, procs, runtime.Version())
	fmt.Printf("%-52s %9s %9s %9s %9s\n", "waiter", "p50", "p90", "p99", "max")
	for _, r := range rows {
		s := r.samples
		fmt.Printf("%-52s %9.1f %9.1f %9.1f %9.1f\n", r.name, pct(s, 50), pct(s, 90), pct(s, 99), s[len(s)-1])
	}
	fmt.Printf("elapsed: %.1f s\n", time.Since(start).Seconds())
	os.Exit(0)
}
