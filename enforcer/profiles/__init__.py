"""Profiles: what each (app, service, image digest) is allowed to do, seeded from the image
and the compose file, learned from events, then held (and pushed into the kernel)."""

from .book import Attachment, ProfileBook
from .kernel import KernelHooks, NullKernelHooks, RecordingKernelHooks
from .model import Entry, Profile

__all__ = ["Attachment", "Entry", "KernelHooks", "NullKernelHooks", "Profile", "ProfileBook",
           "RecordingKernelHooks"]
