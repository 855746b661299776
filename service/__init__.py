"""Ticket booking service: shows, bookings, and the transactional outbox."""
