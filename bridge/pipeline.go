package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Pipeline runs any number of sources, one Subscriber per Redis node,
// feeding one Relay. Sources come and go while it runs (a cluster's
// primaries); readiness and liveness are over all of them, and every gap
// record a source reports carries that source. Safe for concurrent use.
type Pipeline struct {
	ctx     context.Context
	metrics *Metrics

	mu      sync.Mutex
	sources map[string]*source
	wg      sync.WaitGroup

	failOnce sync.Once
	failed   chan error // the first error a source cannot recover from
}

type source struct {
	sub  *Subscriber
	done chan struct{} // closed when its Run returned
	err  error         // Run's error, once done
}

// NewPipeline returns a pipeline whose sources run until ctx ends.
func NewPipeline(ctx context.Context, m *Metrics) *Pipeline {
	return &Pipeline{ctx: ctx, metrics: m, sources: map[string]*source{}, failed: make(chan error, 1)}
}

// Add starts sub under key (a node id, or the endpoint). A source whose Run
// fails with anything but ErrNodeLeft fails the pipeline (Failed).
func (p *Pipeline) Add(key string, sub *Subscriber) { p.add(key, sub, true) }

// AddOptional is Add for a source whose failure does not fail the
// pipeline: it is logged and the source stays not ready.
func (p *Pipeline) AddOptional(key string, sub *Subscriber) { p.add(key, sub, false) }

func (p *Pipeline) add(key string, sub *Subscriber, critical bool) {
	src := &source{sub: sub, done: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return // stopping: nothing new starts
	}
	p.sources[key] = src
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		src.err = sub.Run(p.ctx)
		close(src.done)
		switch {
		case src.err == nil, errors.Is(src.err, ErrNodeLeft):
		case critical:
			p.failOnce.Do(func() { p.failed <- src.err })
		default:
			sub.log.Error("subscription refused for good: this node is not heard", "err", src.err)
		}
	}()
}

// Ended reports whether the source under key has stopped on its own (its
// node left), and its Run error.
func (p *Pipeline) Ended(key string) (bool, error) {
	p.mu.Lock()
	src := p.sources[key]
	p.mu.Unlock()
	if src == nil {
		return false, nil
	}
	select {
	case <-src.done:
		return true, src.err
	default:
		return false, nil
	}
}

// Remove makes the source under key leave (no gap record: the caller
// decides what the departure means), waits for it and returns its
// subscriber (nil if there is none), whose FinalAnchor is then set.
func (p *Pipeline) Remove(key string) *Subscriber {
	p.mu.Lock()
	src := p.sources[key]
	delete(p.sources, key)
	p.mu.Unlock()
	if src == nil {
		return nil
	}
	src.sub.Leave()
	<-src.done
	// A node that is gone is not "not subscribed": drop its series.
	p.metrics.deleteNode(src.sub.cfg.Source)
	return src.sub
}

// Failed delivers the first error a source could not recover from (a
// refused password before the first subscription).
func (p *Pipeline) Failed() <-chan error { return p.failed }

// Ready reports whether every source is subscribed.
func (p *Pipeline) Ready() error {
	var missing []string
	var errs []error
	for _, src := range p.snapshot() {
		if !src.sub.Connected() {
			missing = append(missing, src.sub.cfg.Source)
		} else if err := src.sub.NotificationsFlowing(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		errs = append(errs, fmt.Errorf("not subscribed to %v", missing))
	}
	return errors.Join(errs...)
}

// Alive reports whether every source's reader loop is turning.
func (p *Pipeline) Alive() error {
	var errs []error
	for _, src := range p.snapshot() {
		if err := src.sub.Alive(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src.sub.cfg.Source, err))
		}
	}
	return errors.Join(errs...)
}

// Abort cuts every source's session short (a second signal).
func (p *Pipeline) Abort() {
	for _, src := range p.snapshot() {
		src.sub.Abort()
	}
}

// Wait returns once every source has returned (after the pipeline's
// context ended, each with its drain and its gap record).
func (p *Pipeline) Wait() { p.wg.Wait() }

// Len returns the number of sources.
func (p *Pipeline) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sources)
}

func (p *Pipeline) snapshot() []*source {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*source, 0, len(p.sources))
	for _, src := range p.sources {
		out = append(out, src)
	}
	return out
}
