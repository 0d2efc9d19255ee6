package gateway

import (
	"time"

	"github.com/imagegate/imagegate/gateway/moderation"
	"github.com/imagegate/imagegate/store"
)

// The gateway's view of the data layer, one small interface per concern.
// *store.DB implements them all; a distributed store for multi-region
// writes would implement the same methods.

type accountStore interface {
	CreateAccount(store.NewAccount) (store.Account, error)
	Account(id string) (store.Account, error)
	AccountByEmail(email string) (store.Account, error)
	AccountByGoogle(subject string) (store.Account, error)
	LinkGoogle(id, subject string) error
	SetPassword(id, hash, keepSession string, keys store.APIKeyAction) (store.PasswordChange, error)
}

type sessionStore interface {
	CreateSession(accountID string, p store.SessionPolicy) (string, store.Session, error)
	ValidateSession(token string) (store.Session, error)
	DeleteSession(token string) error
	DeleteSessions(accountID, keep string) (int, error)
}

type emailTokenStore interface {
	CreatePasswordReset(accountID string, ttl time.Duration) (string, error)
	CheckPasswordReset(token string) error
	ConsumePasswordReset(token, newHash string, keys store.APIKeyAction) (store.PasswordChange, error)
	CreateEmailVerification(accountID, newEmail string, ttl time.Duration) (string, error)
	ConfirmEmail(token string) (string, error)
}

type apiKeyStore interface {
	CreateAPIKey(accountID, name string, scopes []string) (string, store.APIKey, error)
	ValidateAPIKey(secret string) (store.APIKey, error)
	APIKeys(accountID string) ([]store.APIKey, error)
	DeleteAPIKey(accountID, keyID string) error
}

type creditStore interface {
	ApplyGrant(accountID, period string, amount int64) (bool, error)
	ReserveHold(h store.Hold) (store.Hold, error)
	CommitHold(holdID string) (store.LedgerEntry, error)
	ReleaseHold(holdID string) error
}

type consentStore interface {
	RecordConsent(store.Consent) (store.Consent, error)
}

type securityLog interface {
	LogSecurityEvent(store.SecurityEvent) error
}

// Store is everything the gateway keeps in the data layer.
type Store interface {
	accountStore
	sessionStore
	emailTokenStore
	apiKeyStore
	creditStore
	consentStore
	securityLog
	modelStore
	billingStore
	moderation.Store
	complianceStore
	analyticsStore
	historyStore
	lifecycleStore
	exportStore
	suspensionStore
	purgeStore
	partnerStore
	dashboardStore
}
