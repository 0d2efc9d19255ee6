package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/store"
)

// model is a backend as the gateway needs it: what goes into cache keys and
// what a request may ask of it.
type model struct {
	inference.ModelInfo
	DefaultStyle string
}

func (m model) sizeList() string {
	s := make([]string, len(m.Sizes))
	for i, n := range m.Sizes {
		s[i] = strconv.Itoa(n) + "x" + strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// modelStore persists the catalogue so a restarted gateway keys requests
// the same way before the inference tier answers.
type modelStore interface {
	SaveModels([]store.Model) error
	Models() ([]store.Model, error)
}

// catalog is the set of models the inference tier runs. It is read on every
// request and replaced wholesale on refresh.
type catalog struct {
	models atomic.Pointer[[]model]
	store  modelStore
	logger *slog.Logger
}

func newCatalog(st modelStore, logger *slog.Logger) *catalog {
	c := &catalog{store: st, logger: logger}
	if st != nil {
		if saved, err := st.Models(); err == nil {
			infos := make([]inference.ModelInfo, len(saved))
			for i, m := range saved {
				infos[i] = inference.ModelInfo(m)
			}
			c.set(infos)
		}
	}
	return c
}

func (c *catalog) set(infos []inference.ModelInfo) {
	ms := make([]model, 0, len(infos))
	for _, info := range infos {
		m := model{ModelInfo: info}
		switch {
		case slices.Contains(info.Styles, "auto"):
			m.DefaultStyle = "auto"
		case len(info.Styles) > 0:
			m.DefaultStyle = info.Styles[0]
		}
		ms = append(ms, m)
	}
	c.models.Store(&ms)
}

func (c *catalog) list() []model {
	if p := c.models.Load(); p != nil {
		return *p
	}
	return nil
}

// lookup resolves a requested model name (or the default) to its entry.
func (c *catalog) lookup(name, fallback string) (model, error) {
	ms := c.list()
	if len(ms) == 0 {
		return model{}, unavailable("the inference tier has not been reached yet; retry shortly", 2, errNoModels)
	}
	if name == "" {
		name = fallback
	}
	if name == "" {
		return ms[0], nil
	}
	for _, m := range ms {
		if m.Name == name {
			return m, nil
		}
	}
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	return model{}, badRequest("invalid_model", fmt.Sprintf("model: %q is not available; use one of %s", name, strings.Join(names, ", ")))
}

// modelLister is the part of the inference client the catalogue needs.
type modelLister interface {
	Models(ctx context.Context) ([]inference.ModelInfo, error)
}

// refresh reads the catalogue from the tier and persists it when it changed.
func (c *catalog) refresh(ctx context.Context, src modelLister) error {
	infos, err := src.Models(ctx)
	if err != nil {
		return err
	}
	if len(infos) == 0 {
		return fmt.Errorf("gateway: the inference tier lists no models")
	}
	c.set(infos)
	if c.store != nil {
		saved := make([]store.Model, len(infos))
		for i, m := range infos {
			saved[i] = store.Model(m)
		}
		if err := c.store.SaveModels(saved); err != nil {
			return err
		}
	}
	return nil
}

// run refreshes the catalogue until ctx ends: every second until the first
// success, then every interval.
func (c *catalog) run(ctx context.Context, src modelLister, interval time.Duration) {
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.refresh(rctx, src)
		cancel()
		switch {
		case err == nil:
			wait = interval
		case ctx.Err() != nil:
			return
		default:
			c.logger.Warn("model catalogue refresh failed", "err", err)
			wait = time.Second
			if len(c.list()) > 0 {
				wait = interval
			}
		}
	}
}
