package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/ratelimit"
	"github.com/imagegate/imagegate/store"
)

// payer is who pays for the images of one request, captured before the
// request's fiber.Ctx is left behind.
type payer struct {
	accountID string // empty: an anonymous visitor, paying from the daily quota
	partnerID string // set: a partner's visitor, paid from the partner's monthly quota
	addr      netip.Addr
	plan      Plan
	planName  string // the plan's name, the tier's plan class
	// rate is the request's rate-limit charge, to which a miss adds the
	// difference between a miss and a hit; nil when not limited.
	rate *ratelimit.Charge
	// prepaid: an anonymous job run again after the gateway running it
	// stopped; the visitor's quota was taken when it was submitted, and the
	// in-memory reservation went with that gateway.
	prepaid bool
}

func (g *Gateway) payerOf(c *fiber.Ctx) payer {
	p := principalOf(c)
	py := payer{addr: g.ips.Addr(c), plan: g.cfg.Plans.plan(planAnonymous), planName: planAnonymous, rate: ratelimit.ChargeOf(c)}
	if p.account != nil {
		py.accountID, py.plan, py.planName = p.account.ID, g.cfg.Plans.plan(p.account.Plan), p.account.Plan
		if _, ok := g.cfg.Plans.Plans[py.planName]; !ok {
			py.planName = g.cfg.Plans.Default
		}
	}
	if pt := partnerOf(c); pt != nil {
		py.partnerID, py.plan = pt.ID, g.cfg.Plans.plan(pt.Plan)
	}
	return py
}

// checkSize refuses sizes above the payer's plan.
func (py payer) checkSize(w, h int) error {
	if max(w, h) <= py.plan.MaxSize {
		return nil
	}
	msg := fmt.Sprintf("size: %dx%d needs a paid plan; this plan allows up to %dx%d", w, h, py.plan.MaxSize, py.plan.MaxSize)
	if py.accountID == "" {
		msg = fmt.Sprintf("size: %dx%d needs an account; without one the largest is %dx%d", w, h, py.plan.MaxSize, py.plan.MaxSize)
	}
	return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "plan_limit", Msg: msg}
}

// ticket is what one image has reserved: credits (accounts) or a daily
// quota slot (anonymous visitors). It is settled exactly once, by whoever
// gets to it first: the request's own generation when it ran (charged if
// it produced the image while the request still waited, given back
// otherwise), or the request itself when no generation of its own started
// (a hit, a join of another request's generation, a failure before it).
type ticket struct {
	hold  *store.Hold
	quota *ratelimit.Hold

	state      atomic.Int32 // ticketOpen, ticketLoading, ticketSettled
	waiterGone atomic.Bool  // the request stopped waiting (timeout)
}

const (
	ticketOpen int32 = iota
	ticketLoading
	ticketSettled
)

var errNoCredits = &apiError{Status: fiber.StatusPaymentRequired, Type: "billing_error", Code: "insufficient_credits",
	Msg: "not enough credits for these images; buy credits or upgrade your plan"}

// reserveAll holds the price of every image of a request that may need
// the GPU, all or nothing, before any is generated: credits for an account
// (402 when the available balance is short), daily quota slots for an
// anonymous visitor. A request for n images can never be half paid.
func (g *Gateway) reserveAll(py payer, cost int64, refs, holdIDs []string) ([]*ticket, error) {
	tickets := make([]*ticket, 0, len(refs))
	for i, ref := range refs {
		id := ""
		if holdIDs != nil {
			id = holdIDs[i]
		}
		t, err := g.reserve(py, cost, ref, id)
		if err != nil {
			for _, held := range tickets {
				g.settle(held, false)
			}
			return nil, err
		}
		tickets = append(tickets, t)
	}
	return tickets, nil
}

// holdsCredits reports whether an image costing cost is paid for py by a
// credit hold in the store (reserve's last case).
func (py payer) holdsCredits(cost int64) bool {
	return py.partnerID == "" && !py.prepaid && py.accountID != "" && cost > 0
}

// reserve pays for one image of ref: from the partner's quota, the free
// quota or a credit hold, which takes holdID if set (an ID the caller
// recorded first; empty: a new one).
func (g *Gateway) reserve(py payer, cost int64, ref, holdID string) (*ticket, error) {
	if py.partnerID != "" || py.prepaid {
		return &ticket{}, nil // paid from the partner's monthly quota (respondForPartner), or prepaid
	}
	if py.accountID == "" {
		h, err := g.quota.Reserve(py.addr, 1)
		if err != nil {
			return nil, err
		}
		return &ticket{quota: h}, nil
	}
	if !py.holdsCredits(cost) {
		return &ticket{}, nil
	}
	if holdID == "" {
		holdID = store.NewID("hold_")
	}
	h, err := g.store.ReserveHold(store.Hold{ID: holdID, AccountID: py.accountID, Amount: cost, Ref: ref})
	switch {
	case errors.Is(err, store.ErrInsufficientCredits):
		return nil, errNoCredits
	case errors.Is(err, store.ErrAccountInactive):
		return nil, &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "account_inactive", Msg: "this account is suspended or being deleted"}
	case err != nil:
		return nil, err
	}
	return &ticket{hold: &h}, nil
}

// claimForLoad is called by the request's own generation as it starts: it
// reports false if the request already settled the ticket (it gave up
// before the generation began), and the generation must not run unpaid.
func (t *ticket) claimForLoad() bool { return t.state.CompareAndSwap(ticketOpen, ticketLoading) }

// finishLoad settles the ticket at the end of the request's own
// generation: charged if it produced the image and the request still
// waited for it, given back otherwise (failure, or refund on timeout).
func (g *Gateway) finishLoad(t *ticket, produced bool) {
	t.state.Store(ticketSettled)
	g.settle(t, produced && !t.waiterGone.Load())
}

// releaseUnlessLoading gives the ticket back when no generation of the
// request's own is running; a running one settles it when it ends.
func (g *Gateway) releaseUnlessLoading(t *ticket) {
	if t.state.CompareAndSwap(ticketOpen, ticketSettled) {
		g.settle(t, false)
	}
}

// settle charges (used) or gives back a ticket's reservation.
func (g *Gateway) settle(t *ticket, used bool) {
	if t.quota != nil {
		if used {
			t.quota.Commit()
		} else {
			t.quota.Release()
		}
	}
	if t.hold == nil {
		return
	}
	var err error
	if used {
		_, err = g.store.CommitHold(t.hold.ID)
	} else {
		err = g.store.ReleaseHold(t.hold.ID)
	}
	if err != nil {
		// The hold stays and is released by the sweeper; the ledger is
		// never charged twice.
		g.logger.Error("credit hold not settled", "used", used, "err", err)
	}
}

// chargeHit bills a cache hit when the configuration prices hits.
func (g *Gateway) chargeHit(py payer, ref string) error {
	if g.cfg.Plans.HitCredits == 0 || py.accountID == "" {
		return nil
	}
	t, err := g.reserve(py, g.cfg.Plans.HitCredits, ref, "")
	if err != nil {
		return err
	}
	g.settle(t, true)
	return nil
}

// grantPlan applies the account's monthly plan grant the first time the
// account acts in a calendar month, and updates acct to match. In other
// requests of the month it costs nothing.
func (g *Gateway) grantPlan(acct *store.Account) {
	period := grantPeriod(g.now())
	if acct.GrantPeriod == period {
		return
	}
	amount := g.cfg.Plans.plan(acct.Plan).MonthlyCredits
	applied, err := g.store.ApplyGrant(acct.ID, period, amount)
	if err != nil {
		g.logger.Error("plan grant failed", "err", err)
		return
	}
	acct.GrantPeriod = period
	if applied {
		acct.Credits += amount
	}
}
