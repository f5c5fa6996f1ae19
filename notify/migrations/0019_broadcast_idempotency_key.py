"""notify_broadcast.idempotency_key and request_hash: a retried POST /api/v1/broadcasts with the
same Idempotency-Key answers the broadcast it created instead of starting a second one.

Both columns are added without a table rewrite (a NULL column, and a constant default). The
unique partial index is built while writes to notify_broadcast wait: a small table (one row per
broadcast), and every existing row has a NULL key, so the build is a scan of it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0018_delivery_parents_unconstrained'),
    ]

    operations = [
        migrations.AddField(
            model_name='broadcast',
            name='idempotency_key',
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.AddField(
            model_name='broadcast',
            name='request_hash',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
        migrations.AddConstraint(
            model_name='broadcast',
            constraint=models.UniqueConstraint(condition=models.Q(('idempotency_key__isnull', False)), fields=('app', 'idempotency_key'), name='broadcast_idempotency_key'),
        ),
    ]
