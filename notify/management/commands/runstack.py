"""``manage.py runstack``: the whole system on the embedded provider sandbox, plus a demo send."""

import signal
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from notify import demo
from notify.stack import Stack, StackConfig


class Command(BaseCommand):
    help = "Start sandbox, API, one worker pool per channel, dispatcher and Flower; send a demo notification."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--once", action="store_true", help="stop after the demo")
        parser.add_argument("--no-demo", action="store_true")

    def handle(self, *args, port, once, no_demo, **options):
        config = StackConfig(api_port=port, sandbox_dir=Path(settings.NOTIFY_SANDBOX_DIR),
                             log_dir=settings.VAR_DIR / "log")
        stack = Stack(config)
        self.stdout.write("starting provider sandbox, API, outbox relay, workers (apns fcm webpush sms email), dispatcher, Flower …")
        stack.start()
        try:
            self.stdout.write(f"API      {stack.api_url}/api/v1/  (OpenAPI: {stack.api_url}/api/v1/schema)")
            self.stdout.write(f"admin    {stack.api_url}/admin/  (python manage.py createsuperuser)")
            self.stdout.write(f"Flower   http://127.0.0.1:{config.flower_port}/")
            self.stdout.write(f"sandbox  {stack.control_url}/records   logs: {config.log_dir}/")
            if not no_demo:
                _, key = demo.create_app()
                self.stdout.write(f"demo API key: {key}")
                demo.run_demo(stack.api_url, stack.control_url, key, out=self.stdout.write)
            if once:
                return
            self.stdout.write("running; Ctrl-C stops everything")
            signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            stack.stop()
