"""notify_outboxbatch.broadcast_id: which broadcast wrote a batch row, so cancelling it deletes
the rows the relay has not published yet (notify.store.cancel_broadcast).

A nullable column with no database constraint (as notify_notification.broadcast_id): PostgreSQL
adds it without rewriting the table or scanning it. Rows written by the old code keep NULL and
are published as before (their deliveries, if their broadcast was cancelled, are skipped by the
worker's claim). No ordering constraint between the code and the migration beyond the usual
"migrate, then deploy".
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0016_outbox_batch'),
    ]

    operations = [
        migrations.AddField(
            model_name='outboxbatch',
            name='broadcast',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.CASCADE, related_name='+',
                                    to='notify.broadcast'),
        ),
    ]
