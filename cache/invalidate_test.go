package cache

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
)

// modelLoader makes an output of model at version.
func modelLoader(data, model, version string, calls *atomic.Int32) Loader {
	return func(ctx context.Context) (Generated, error) {
		calls.Add(1)
		g := generated(data)
		g.Model, g.ModelVersion = model, version
		return g, nil
	}
}

func TestInvalidateWhere(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	c := newTestCache(t, "", store, Config{})
	var calls atomic.Int32
	old1, _ := get(t, c, testKey(1), false, modelLoader("a", "retro", "1", &calls))
	old2, _ := get(t, c, testKey(2), false, modelLoader("b", "retro", "1", &calls))
	cur, _ := get(t, c, testKey(3), false, modelLoader("c", "retro", "2", &calls))

	n, err := c.InvalidateWhere(func(e Entry) bool { return e.Model == "retro" && e.ModelVersion == "1" })
	if err != nil || n != 2 {
		t.Fatalf("InvalidateWhere = %d, %v; want 2", n, err)
	}
	for _, k := range []Key{testKey(1), testKey(2)} {
		if _, found, _ := c.l2.get(k); found {
			t.Errorf("L2 still has %s", k)
		}
		if _, ok := c.l1.entry(k); ok {
			t.Errorf("L1 still has %s", k)
		}
	}
	for _, e := range []Entry{old1, old2} {
		if _, ok := c.l1.object(e.Object, e.Ext); ok {
			t.Errorf("L1 still holds the bytes of %s", e.Object)
		}
	}
	if e, o := get(t, c, testKey(3), false, failLoader(t)); o.Tier != TierL1 || e.Object != cur.Object {
		t.Errorf("an unmatched entry went: tier %v", o.Tier)
	}
	// By object prefix.
	prefix := cur.Object[:6]
	n, _ = c.InvalidateWhere(func(e Entry) bool { return strings.HasPrefix(e.Object, prefix) })
	if n != 1 {
		t.Errorf("prefix purge removed %d, want 1", n)
	}
	if _, found, _ := c.l2.get(testKey(3)); found {
		t.Errorf("prefix purge left the entry in L2")
	}
}

func TestInvalidateAll(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	c := newTestCache(t, "", store, Config{})
	var calls atomic.Int32
	for i := range 5 {
		get(t, c, testKey(40+i), false, countingLoader(strings.Repeat("x", i+1), &calls))
	}
	if err := c.InvalidateAll(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, found, _ := c.l2.get(testKey(40 + i)); found {
			t.Errorf("L2 kept entry %d", i)
		}
		if _, ok := c.l1.entry(testKey(40 + i)); ok {
			t.Errorf("L1 kept entry %d", i)
		}
	}
	// The shared tier is untouched: the manifests still answer.
	if _, o := get(t, c, testKey(40), false, failLoader(t)); o.Tier != TierL3 {
		t.Errorf("after InvalidateAll: tier %v, want l3", o.Tier)
	}
}
