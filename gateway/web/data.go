package web

import "time"

// The data each page template reads, in .Data.

// Home is the generator page, empty or showing a result.
type Home struct {
	MaxPrompt int
	// The form's values, echoed back after a form post.
	Prompt, Model, Style, Size, Seed, Strength string
	N                                          int
	Edit                                       bool
	Models                                     []Model
	Sizes                                      []string
	Results                                    []Image
}

// Model is one entry of the model list. Procedural models (retro) draw
// with code and must never be presented as neural models.
type Model struct {
	Name, Description string
	Procedural        bool
	Styles            []string
}

// Image is one generated image.
type Image struct {
	URL           string
	Width, Height int
	Seed          uint32
}

// Gallery is the account's generations, newest first.
type Gallery struct {
	Items []GalleryItem
}

// GalleryItem is one generation with a fresh signed link.
type GalleryItem struct {
	ID, URL, Prompt, Model, Style string
	Width, Height                 int
	Seed                          uint64
	Edit                          bool
	// Expires is when the output is deleted; zero: kept until deleted.
	Expires time.Time
}

// Auth is the sign-up and sign-in forms.
type Auth struct {
	Email string
	// Google shows the Sign in with Google button.
	Google bool
	// Sent: the sign-up was accepted (an email went out).
	Sent bool
}

// Reset is the password-reset page: a token shows the new-password form,
// none the request form.
type Reset struct {
	Token string
	Sent  bool
}

// Verify is the email-confirmation page.
type Verify struct{ Token string }

// Message is a page with one message and an optional link onwards.
type Message struct {
	Message, Link, LinkText string
}

// Account is the account and privacy centre.
type Account struct {
	Email, Plan, DisplayName string
	Credits                  int64
	Verified, HasPassword    bool
	// GPC: the browser sends Global Privacy Control.
	GPC      bool
	Settings Settings
	Keys     []APIKey
	// NewKey is a key created by this request, shown once.
	NewKey string
}

// Settings are the account's privacy switches, positively worded.
type Settings struct {
	Analytics, ModelImprovement, ProductEmail bool
}

// APIKey is one key as listed (never its secret).
type APIKey struct {
	ID, Name, Hint string
	Scopes         []string
	// Flagged is set when a password change kept the key but flagged it
	// for review.
	Flagged bool
	Created time.Time
}

// Cookies is the cookie policy and preferences page.
type Cookies struct {
	Updated  string
	Revision int
	Cookies  []Cookie
}

// Cookie is one declared cookie.
type Cookie struct {
	Name, Category, Purpose, Lifetime string
}

// Pricing lists the plans and, when payments are configured, what can be
// bought through Stripe Checkout.
type Pricing struct {
	Plans         []Plan
	Billing       bool
	Subscriptions []Offer
	Packs         []Offer
}

// Plan is an account plan and its monthly credits.
type Plan struct {
	Name    string
	Credits int64
	// MaxSize is the largest image side; RetentionDays how long outputs
	// are kept after their last access.
	MaxSize, RetentionDays int
}

// Offer is a pack or a subscription sold through Checkout.
type Offer struct {
	Name, Plan string
	Credits    int64
}
