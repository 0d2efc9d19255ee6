// Package faultnet is an in-process TCP proxy for fault tests: put it
// between a client and a server and make the path slow, reset, silent or
// slow to close, as networks and dying hosts are.
package faultnet

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Mode is what the proxy does with new connections.
type Mode int

const (
	// Pass forwards bytes, after Latency per chunk.
	Pass Mode = iota
	// Reset accepts and at once resets the connection (RST, not FIN).
	Reset
	// Blackhole accepts, reads and discards, and never answers: a host
	// that went silent.
	Blackhole
	// SlowClose forwards without delay, but when the server closes, holds
	// the client's side open for Latency before closing it.
	SlowClose
)

// Proxy forwards loopback connections to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	mode    Mode
	latency time.Duration
	conns   map[net.Conn]struct{}
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// Start proxies a loopback port to target until the test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, closed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set changes what happens to new connections; open ones keep theirs,
// except that Reset also resets every open connection.
func (p *Proxy) Set(mode Mode, latency time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.latency = mode, latency
	if mode == Reset {
		for c := range p.conns {
			reset(c)
		}
	}
}

// Close stops the proxy and drops every connection.
func (p *Proxy) Close() {
	p.once.Do(func() {
		close(p.closed)
		p.ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
		c.Close()
		return false
	default:
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.mu.Lock()
		mode, latency := p.mode, p.latency
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			switch mode {
			case Reset:
				reset(c)
			case Blackhole:
				io.Copy(io.Discard, c)
			default:
				p.forward(c, mode, latency)
			}
		}()
	}
}

func (p *Proxy) forward(c net.Conn, mode Mode, latency time.Duration) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		reset(c)
		return
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	chunk := latency
	if mode == SlowClose {
		chunk = 0 // only the close is slow
	}
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, c, chunk); done <- struct{}{} }()
	go func() {
		p.pipe(c, up, chunk)
		if mode == SlowClose {
			// The server closed: keep the client waiting before it
			// sees the end.
			select {
			case <-time.After(latency):
			case <-p.closed:
			}
		}
		done <- struct{}{}
	}()
	<-done
}

// pipe copies src to dst, sleeping latency before each chunk.
func (p *Proxy) pipe(dst, src net.Conn, latency time.Duration) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if latency > 0 {
				select {
				case <-time.After(latency):
				case <-p.closed:
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			return
		}
	}
}
