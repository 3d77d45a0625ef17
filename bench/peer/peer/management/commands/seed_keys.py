"""`manage.py seed_keys --count N --keys-out FILE`: create N API keys and
write their plaintext keys, one per line. Uses the model manager's
`assign_key` (what `APIKey.objects.create_key` does per key) and
`bulk_create`, so a million keys do not take a million INSERT transactions.
"""
import time

from django.core.management.base import BaseCommand
from rest_framework_api_key.models import APIKey


class Command(BaseCommand):
    help = "Create N API keys in bulk and write the plaintext keys to a file."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--keys-out", required=True)
        parser.add_argument("--batch", type=int, default=20000)

    def handle(self, *args, count, keys_out, batch, **options):
        started = time.monotonic()
        prefixes = set(APIKey.objects.values_list("prefix", flat=True))
        made = 0
        with open(keys_out, "w") as out:
            while made < count:
                objs, keys = [], []
                while len(objs) < min(batch, count - made):
                    obj = APIKey(name=f"bench {made + len(objs)}")
                    key = APIKey.objects.assign_key(obj)
                    if obj.prefix in prefixes:  # prefix is unique (8 chars)
                        continue
                    prefixes.add(obj.prefix)
                    objs.append(obj)
                    keys.append(key)
                APIKey.objects.bulk_create(objs)
                out.write("\n".join(keys) + "\n")
                made += len(objs)
        self.stdout.write(f"seeded {made} keys in {time.monotonic() - started:.1f}s")
