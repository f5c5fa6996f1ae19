"""notify_notification's foreign keys to its hot parent rows (app, API key, template,
broadcast) dropped from the database; Django keeps their on_delete and the indexes stay
(notify.models.notifications.Notification says why).

Each DROP CONSTRAINT is a catalogue change under a short ACCESS EXCLUSIVE lock on
notify_notification and a SHARE ROW EXCLUSIVE one on the parent table, with no scan: it waits
only for the transactions already writing notifications, so it runs on a live installation.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0014_partitioned_history'),
    ]

    operations = [
        migrations.AlterField(
            model_name='notification',
            name='api_key',
            field=models.ForeignKey(db_constraint=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='notify.appapikey'),
        ),
        migrations.AlterField(
            model_name='notification',
            name='app',
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.PROTECT, related_name='notifications', to='notify.app'),
        ),
        migrations.AlterField(
            model_name='notification',
            name='broadcast',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='notifications', to='notify.broadcast'),
        ),
        migrations.AlterField(
            model_name='notification',
            name='template',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='notify.template'),
        ),
    ]
