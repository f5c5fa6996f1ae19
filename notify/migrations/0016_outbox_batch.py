"""notify_outboxbatch: a broadcast's deliveries wait for the relay as one row per channel and
lane instead of each as itself (notify.models.notifications.OutboxBatch).

A new, empty table: no lock on any existing one. Deploy the relays with or before the
maintenance workers: a fan-out by the new code marks its deliveries published, and a relay of
the old code leaves their batch rows alone (the dispatcher's sweep would publish them only after
NOTIFY_REPUBLISH_STALE_AFTER).
"""

import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0015_notification_hot_parents_unconstrained'),
    ]

    operations = [
        migrations.CreateModel(
            name='OutboxBatch',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('channel', models.CharField(max_length=16)),
                ('delivery_ids', django.contrib.postgres.fields.ArrayField(base_field=models.UUIDField(), size=None)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'verbose_name_plural': 'outbox batches',
            },
        ),
    ]
