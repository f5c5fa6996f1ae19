"""notify_delivery's foreign keys to its notification and its device dropped from the database;
Django keeps their on_delete and the indexes stay (notify.models.notifications.Delivery says
why).

On the partitioned table each DROP CONSTRAINT removes the constraint from the parent and every
partition: a catalogue change under a short ACCESS EXCLUSIVE lock on notify_delivery and its
partitions and a SHARE ROW EXCLUSIVE one on notify_notification and notify_device, with no scan,
so it waits only for the transactions already writing deliveries and runs on a live
installation. Code of any version runs against either schema.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0017_outbox_batch_broadcast'),
    ]

    operations = [
        migrations.AlterField(
            model_name='delivery',
            name='device',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='deliveries', to='notify.device'),
        ),
        migrations.AlterField(
            model_name='delivery',
            name='notification',
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='notify.notification'),
        ),
    ]
