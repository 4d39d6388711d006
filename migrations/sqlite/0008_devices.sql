-- Sign-in across devices and the member's own sessions.
-- magic_links.device: the browser that asked for the link, as a person reads it
--   ("Firefox on Android"), shown on the confirm page of another device.
-- magic_links.waiting_at: when the asking device last checked on its request;
--   a recent value means someone is waiting for the other device to confirm.
-- magic_links.handoff: 'approved' when another device picked the right number
--   (the waiting device collects the session), 'refused' after a wrong pick.
-- sessions.device: the browser or client a session was opened on.
ALTER TABLE magic_links ADD COLUMN device TEXT;
ALTER TABLE magic_links ADD COLUMN waiting_at INTEGER;
ALTER TABLE magic_links ADD COLUMN handoff TEXT;
ALTER TABLE sessions ADD COLUMN device TEXT;
