# Existing keys get the default, every scope but admin (notify.scopes.DEFAULT): AddField fills
# the rows already there with the callable default's value, so current callers keep working.

import django.contrib.postgres.fields
import notify.scopes
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0008_analytics'),
    ]

    operations = [
        migrations.AddField(
            model_name='appapikey',
            name='scopes',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=20), blank=True, default=notify.scopes.default, help_text='What the key may do; admin grants every scope.', size=None, validators=[notify.scopes.validate]),
        ),
    ]
