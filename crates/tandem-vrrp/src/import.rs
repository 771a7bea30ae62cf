//! Keepalived import (to come).
